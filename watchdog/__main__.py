"""Allow ``python -m deltawire.watchdog``."""

import sys

from .cli import main

sys.exit(main())
