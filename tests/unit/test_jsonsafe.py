"""``core.jsonsafe``: JSON without NaN tokens, numpy values as plain Python."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core.jsonsafe import dumps_json, json_safe

NAN, INF = math.nan, math.inf


def test_non_finite_floats_default_to_null_and_inf_text():
    assert json_safe(NAN) is None
    assert json_safe(INF) == "inf" and json_safe(-INF) == "-inf"
    assert json_safe(np.float64("nan")) is None and json_safe(np.float32("-inf")) == "-inf"


def test_non_finite_floats_as_json_spellings_keep_the_raw_value():
    assert json_safe([NAN, INF, -INF, 1.5], nonfinite="text") == ["NaN", "Infinity", "-Infinity", 1.5]


def test_nested_values_numpy_and_keys():
    value = {
        "pf": INF,
        3: (np.int64(7), np.float64(0.25), np.bool_(True)),
        "curve": np.array([1.0, NAN, 2.0]),
        "grid": np.arange(4, dtype=np.int32).reshape(2, 2),
        "none": None,
        "text": "NaN",
    }
    out = json_safe(value)
    assert out == {
        "pf": "inf",
        "3": [7, 0.25, True],
        "curve": [1.0, None, 2.0],
        "grid": [[0, 1], [2, 3]],
        "none": None,
        "text": "NaN",
    }
    assert type(out["3"][0]) is int and type(out["3"][1]) is float and type(out["3"][2]) is bool
    assert type(json_safe(np.float64(0.5))) is float


def test_other_types_are_left_for_the_caller():
    marker = object()
    assert json_safe({"x": marker})["x"] is marker


def test_input_is_not_modified():
    value = {"a": [NAN]}
    json_safe(value)
    assert math.isnan(value["a"][0])


def test_unknown_spelling_is_refused():
    with pytest.raises(ValueError, match="nonfinite"):
        json_safe(1.0, nonfinite="nan")  # type: ignore[arg-type]


def test_dumps_json_writes_strict_json():
    text = dumps_json({"b": NAN, "a": [INF, np.int64(2)]}, sort_keys=True)
    assert text == '{"a": ["inf", 2], "b": null}'
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"token {c}")) == {
        "a": ["inf", 2],
        "b": None,
    }


def test_dumps_json_passes_options_and_default():
    assert (
        dumps_json({"p": object.__new__(type("P", (), {"__str__": lambda s: "p"}))}, default=str)
        == '{"p": "p"}'
    )
    assert dumps_json([1.0], indent=1) == "[\n 1.0\n]"
    with pytest.raises(TypeError):
        dumps_json({"o": object()})
