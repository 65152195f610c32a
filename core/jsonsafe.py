"""JSON without NaN: one conversion of our values (numpy scalars and arrays, NaN, ±inf) to plain JSON.

``json.dumps`` writes NaN and ±inf as the bare tokens ``NaN``/``Infinity``, which strict parsers
(PostgreSQL JSONB, browsers' ``JSON.parse``, orjson) refuse, and it refuses numpy scalars. Every
writer of JSON converts through ``json_safe`` (or writes with ``dumps_json``) instead of keeping a
private copy of these rules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["NonFinite", "dumps_json", "json_safe"]

#: How ``json_safe`` writes a non-finite float:
#: ``"null"``: NaN as None (no value), +inf / -inf as ``"inf"`` / ``"-inf"`` (a profit factor with no
#: losing trade stays readable); ``"text"``: ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, the spellings
#: of ``json.dumps(allow_nan=True)``, so a rejected input keeps its raw value in an audit record.
NonFinite = Literal["null", "text"]

_SPELLINGS: dict[str, tuple[str | None, str, str]] = {
    "null": (None, "inf", "-inf"),
    "text": ("NaN", "Infinity", "-Infinity"),
}


def json_safe(value: Any, *, nonfinite: NonFinite = "null") -> Any:
    """Return ``value`` with JSON types only, recursively; values of other types are left as they are.

    Mappings become dicts with ``str`` keys, lists, tuples and numpy arrays become lists, numpy
    scalars become Python scalars, and non-finite floats are spelled as ``nonfinite`` says.
    """
    if nonfinite not in _SPELLINGS:
        raise ValueError(f"nonfinite must be 'null' or 'text', got {nonfinite!r}")
    return _convert(value, _SPELLINGS[nonfinite])


def dumps_json(value: Any, *, nonfinite: NonFinite = "null", **kwargs: Any) -> str:
    """Return ``json.dumps`` of ``json_safe(value)``; never writes a NaN token (``allow_nan=False``).

    ``kwargs`` go to ``json.dumps`` (``indent``, ``sort_keys``, ``default`` for other types, …).
    """
    return json.dumps(json_safe(value, nonfinite=nonfinite), allow_nan=False, **kwargs)


def _convert(value: Any, spell: tuple[str | None, str, str]) -> Any:
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)  # a numpy float64 (a float subclass) becomes a plain float
        return spell[0] if math.isnan(value) else (spell[1] if value > 0 else spell[2])
    if isinstance(value, Mapping):
        return {str(k): _convert(v, spell) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_convert(v, spell) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist) and hasattr(value, "dtype") and hasattr(value, "shape"):
        return _convert(tolist(), spell)
    return value
