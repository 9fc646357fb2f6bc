"""The ingest process's C heap: keep big transient buffers out of it.

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes with its own
mmap, returned to the system on free. The threshold starts at 128 KiB but is
dynamic: each freed mmapped chunk raises it to that chunk's size (up to 32
MiB). One refused zstd bomb frees a decoder buffer of ~1 MiB, so from then on
buffers that size come from the brk heap, where a few live objects above the
holes keep the freed space from being returned: with no reference cycle
left, 400 bombs (ten at a time, in-process) still left the ingest process
13-24 MB bigger, all of it free heap that only ``malloc_trim`` gave back.
Fixing the threshold at glibc's own default turns the dynamic raise off: the
same 400 bombs then left it 3-11 MB above where it was (the sender in the
same process; the collector alone, ``bench.zmem``: see docs/protocol.md).

The cost: a compressed read's decoder buffer (~0.5-1 MiB inflated from 64
KiB) is mmapped afresh each read instead of reusing heap. Measured on the
recording in 64 KiB reads, sans-IO decode + reassembly, CPU time, best of 15,
four alternations (load average ~15): 8.4-8.7 us a sample with the dynamic
threshold, 8.6-9.6 fixed, i.e. ~0.2-0.3 us, under 0.5% of the collector's
CPU per compressed sample. Plain reads (64 KiB) stay under the threshold.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from typing import Final

__all__ = ["MMAP_THRESHOLD", "tune_malloc"]

#: glibc's default, fixed (see above). 1,000 held zstd sessions measured the
#: same RSS with it (bench.zmem: 278-282 MB against 282 before).
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
