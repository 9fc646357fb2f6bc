"""The "counter" extension: integer leaves of a delta sent as increments.

A merge patch resends every changed counter in full (``"read_bytes":1380352``,
all digits, every time). Under the ``counter`` extension a ``cdelta`` frame is
a merge patch in which an integer member that replaces an integer member of
the base carries the difference instead: a counter that grew by 4096 sends
``4096``, and a zstd stream then finds that repeat in its window. Everything
else is as in a ``delta``: objects merge, ``null`` deletes, other values
(floats included, so they stay bit-exact) replace. Both ends decide from the
base alone whether a member is an increment, so nothing marks it on the wire.
Reassembly is exact: integer arithmetic, and a sum outside the int64 range the
stores keep is refused (``bad_frame``) like any out-of-range integer.
"""

from __future__ import annotations

from typing import Any, Final

from .errors import BadFrame

__all__ = ["BATCH", "COUNTER", "EXTENSIONS", "apply_counter_patch", "to_counter_patch"]

COUNTER: Final = "counter"

#: ``batch`` frames: runs of ``cdelta`` frames in one line (protocol/batch.py).
#: Accepted only together with ``counter``, whose patches a batch carries.
BATCH: Final = "batch"

#: The extensions this side speaks.
EXTENSIONS: Final = (COUNTER, BATCH)

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1


def to_counter_patch(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
    """The ``cdelta`` data for merge patch ``patch`` against ``base``, or None
    if an increment leaves int64 (a jump from near -2^63 to near 2^63: the
    wire cannot carry it, so the sender sends a snap instead)."""
    out: dict[str, Any] = {}
    for key, value in patch.items():
        old = base.get(key)
        if type(value) is dict and type(old) is dict:
            sub = to_counter_patch(old, value)
            if sub is None:
                return None
            out[key] = sub
        elif type(value) is int and type(old) is int:
            step = value - old
            if not _INT64_MIN <= step <= _INT64_MAX:
                return None
            out[key] = step
        else:
            out[key] = value
    return out


def apply_counter_patch(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``cdelta`` data applied; ``base`` is not modified.

    Raises ``BadFrame`` (without a seq: the caller adds it) for a sum outside int64.
    """
    result = base.copy()
    for key, value in patch.items():
        tv = type(value)
        if tv is dict:
            old = result.get(key)
            if type(old) is not dict:
                result[key] = apply_counter_patch({}, value)
                continue
            # The second level inline, as in apply_patch: samples are objects
            # of counters, and a call per member object was half the cost.
            merged = old.copy()
            for k, v in value.items():
                tv = type(v)
                if tv is int:
                    o = merged.get(k)
                    if type(o) is int:
                        v += o
                        if not _INT64_MIN <= v <= _INT64_MAX:
                            raise BadFrame(f"counter {k!r} leaves the int64 range")
                    merged[k] = v
                elif tv is dict:
                    o = merged.get(k)
                    merged[k] = apply_counter_patch(o if type(o) is dict else {}, v)
                elif v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
            result[key] = merged
        elif value is None:
            result.pop(key, None)
        elif tv is int and type(old := result.get(key)) is int:
            total = old + value
            if not _INT64_MIN <= total <= _INT64_MAX:
                raise BadFrame(f"counter {key!r} leaves the int64 range")
            result[key] = total
        else:
            result[key] = value
    return result
