"""The ingest process's C heap: keep big transient buffers out of it.

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes with its own
mmap, returned to the system on free. The threshold starts at 128 KiB but is
dynamic: each freed mmapped chunk raises it to that chunk's size (up to 32
MiB). One refused zstd bomb frees a decoder buffer of ~1 MiB, so from then on
buffers that size come from the brk heap, where a few live objects above the
holes keep the freed space from ever being returned: 400 bombs left the
ingest process 15-25 MB bigger (measured in-process, 10 bombs at a time), all
of it free heap that only ``malloc_trim`` gave back. Fixing the threshold at
glibc's own default turns the dynamic raise off: the same 400 bombs then left
it within 2-6 MB of where it was. The cost is an mmap per allocation over 128
KiB (a decoder buffer's growth on a compressed read, a few per 64 KiB read),
microseconds against the milliseconds that read takes to parse.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from typing import Final

__all__ = ["MMAP_THRESHOLD", "tune_malloc"]

#: glibc's default, fixed (see above): 1,000 held zstd sessions measured the
#: same RSS with it (their contexts' window buffers are mmapped either way).
MMAP_THRESHOLD: Final = 128 << 10
_M_MMAP_THRESHOLD: Final = -3  # malloc.h


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold for this process; False where there is no
    glibc (musl, macOS: their allocators have no dynamic threshold to fix)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
