"""JSON Merge Patch (RFC 7396): make and apply patches.

Both functions treat their inputs as immutable. ``apply_patch`` copies only the
objects on the paths a patch touches and shares every other subtree with the
target, which keeps reassembling a long delta chain cheap while the previous
documents stay valid (they may still sit in a write queue).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["apply_patch", "json_equal", "make_patch", "patch_is_smaller"]

_dumps = orjson.dumps


def apply_patch(target: Any, patch: Any) -> Any:
    """Return ``target`` with the merge patch applied (RFC 7396 section 2)."""
    if type(patch) is not dict:
        return patch
    result: dict[str, Any] = target.copy() if type(target) is dict else {}
    for key, value in patch.items():
        if type(value) is dict:
            sub = result.get(key)
            if type(sub) is dict:
                # The second level inline: samples are objects of objects, and
                # a call per member object is a good part of the cost.
                merged = sub.copy()
                for k, v in value.items():
                    if type(v) is dict:
                        merged[k] = apply_patch(merged.get(k), v)
                    elif v is None:
                        merged.pop(k, None)
                    else:
                        merged[k] = v
                result[key] = merged
            else:
                result[key] = apply_patch(None, value)
        elif value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: ``1``, ``1.0`` and ``true`` are three values.

    Python's ``==`` conflates them, and a patch that skipped such a change
    would reconstruct a document with the wrong type.
    """
    if a is b:
        return True
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is dict:
        if len(a) != len(b):
            return False
        for key, value in a.items():
            if key not in b or not json_equal(value, b[key]):
                return False
        return True
    if ta is list:
        # Cheap rejection first; the serialised comparison catches 1 vs 1.0 inside.
        return bool(a == b) and _dumps(a) == _dumps(b)
    return bool(a == b)


def make_patch(source: Any, target: Any) -> Any:
    """The merge patch that turns ``source`` into ``target``.

    ``target`` must not hold ``null`` as an object member (merge patch cannot
    express it: ``null`` means delete); a ``ValueError`` says so instead of
    producing a patch that silently loses the key.
    """
    if type(source) is not dict or type(target) is not dict:
        _check_no_null_members(target)
        return target
    return _diff(source, target, [])


def patch_is_smaller(source: dict[str, Any], target: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``(make_patch(source, target), whether it serialises shorter than target)``.

    Without deletions a patch is a sub-structure of ``target``, so dropping a
    whole top-level member makes it strictly shorter: no serialising needed.
    Only the rare other cases are measured.
    """
    deletions: list[str] = []
    patch = _diff(source, target, deletions)
    if not deletions and len(patch) < len(target):
        return patch, True
    return patch, len(_dumps(patch)) < len(_dumps(target))


_MISSING: Any = object()


def _diff(source: dict[str, Any], target: dict[str, Any], deletions: list[str]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    found = 0
    for key, new in target.items():
        old = source.get(key, _MISSING)
        if old is not _MISSING:
            found += 1
            if old is new:
                continue
            tn = type(new)
            if tn is type(old):
                if tn is dict:
                    sub = _diff(old, new, deletions)
                    if sub:
                        patch[key] = sub
                    continue
                # Same JSON kind and equal; lists also compared serialised,
                # since [1] == [1.0] in Python but not in JSON.
                if old == new and (tn is not list or _dumps(old) == _dumps(new)):
                    continue
        if new is None:
            raise ValueError(f"null member {key!r}: samples cannot hold null values")
        if type(new) is dict:
            _check_no_null_members(new)
        patch[key] = new
    if found < len(source):
        for key in source:
            if key not in target:
                patch[key] = None
                deletions.append(key)
    return patch


def _check_no_null_members(value: Any) -> None:
    if type(value) is dict:
        for key, member in value.items():
            if member is None:
                raise ValueError(f"null member {key!r}: samples cannot hold null values")
            _check_no_null_members(member)
