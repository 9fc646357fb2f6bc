"""Allow ``python -m watchdog``."""

import sys

from .cli import main

sys.exit(main())
