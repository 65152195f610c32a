"""``POST /predict`` (serve/api/predict.py) over a real LightGBM multi-target model held in process."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from model_fixtures import feature_rows, long_biased_model

from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.model import MultiTargetModel
from serve.api.predict import NPY_MEDIA_TYPE, model_call, predict_router

VERSION = "3"


@pytest.fixture(scope="module")
def model() -> MultiTargetModel:
    return long_biased_model()


@pytest.fixture(scope="module")
def client(model: MultiTargetModel) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(predict_router(model_call(model, VERSION), max_rows=50))
    with TestClient(app) as c:
        yield c


def _rows(n: int = 6) -> np.ndarray:
    x = feature_rows(n, seed=11)[0].to_numpy(np.float64)
    assert np.isnan(x).any()  # missing values travel as null / NaN
    return x


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


def _pickled(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=True)
    return buf.getvalue()


def _json_rows(x: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in x]


def test_json_and_binary_give_the_models_predictions_and_version(
    client: TestClient, model: MultiTargetModel
) -> None:
    x = _rows()
    expected = model.predict(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    by_json = client.post("/predict", json={"rows": _json_rows(x)})
    by_npy = client.post("/predict", content=_npy(x), headers={"Content-Type": NPY_MEDIA_TYPE})
    assert by_json.status_code == by_npy.status_code == 200, (by_json.text, by_npy.text)
    assert by_json.json() == by_npy.json()
    answer = by_json.json()
    assert answer["model_version"] == VERSION
    assert set(answer["predictions"]) == set(expected) and "er_long" in expected
    for key, values in expected.items():
        assert answer["predictions"][key] == values.tolist()  # float64 round-trips through JSON exactly
    # The long-biased model expects about +2% long and -2% short on any row.
    assert min(answer["predictions"]["er_long"]) > 0.01 and max(answer["predictions"]["er_short"]) < -0.01


def test_bad_row_width_is_422_naming_the_row(client: TestClient) -> None:
    rows = _json_rows(_rows(3))
    rows[1] = rows[1][:-1]
    r = client.post("/predict", json={"rows": rows})
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "rows", 1]
    assert (
        f"row 1 has {len(FEATURE_NAMES) - 1} values" in err["msg"] and str(len(FEATURE_NAMES)) in err["msg"]
    )

    r = client.post("/predict", content=_npy(_rows(3)[:, :-1]), headers={"Content-Type": NPY_MEDIA_TYPE})
    assert r.status_code == 422 and f"(3, {len(FEATURE_NAMES) - 1})" in r.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"rows": []}, "at least one row"),
        ({"features": [[1.0]]}, '{"rows"'),
        ({"rows": [[*[0.0] * (len(FEATURE_NAMES) - 1), "x"]]}, f"{FEATURE_NAMES[-1]} must be a number"),
        ({"rows": [[True] * len(FEATURE_NAMES)]}, f"{FEATURE_NAMES[0]} must be a number"),
    ],
)
def test_bad_json_body_is_422_naming_the_problem(client: TestClient, body: dict, problem: str) -> None:
    r = client.post("/predict", json=body)
    assert r.status_code == 422 and problem in r.json()["detail"][0]["msg"], r.text


def test_bad_npy_body_is_422(client: TestClient) -> None:
    for content, problem in [
        (_npy(_rows(2).astype(np.float32)), "dtype must be float64, got float32"),
        (_npy(_rows(1)[0]), f"got ({len(FEATURE_NAMES)},)"),
        (b"not an array", "not a .npy array"),
        (_pickled(np.array([{"a": 1}], dtype=object)), "no pickle"),  # never unpickled
    ]:
        r = client.post("/predict", content=content, headers={"Content-Type": NPY_MEDIA_TYPE})
        assert r.status_code == 422 and problem in r.json()["detail"][0]["msg"], r.text


def test_other_content_types_are_refused_415(client: TestClient) -> None:
    body = _npy(_rows(2))
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-npy"}, {}):
        r = client.post("/predict", content=body, headers=headers)
        assert r.status_code == 415 and "application/json" in r.json()["detail"], (headers, r.text)


def test_more_rows_than_allowed_is_413(client: TestClient) -> None:
    r = client.post("/predict", content=_npy(np.zeros((51, len(FEATURE_NAMES)))),
                    headers={"Content-Type": NPY_MEDIA_TYPE})  # fmt: skip
    assert r.status_code == 413 and "at most 50" in r.json()["detail"]
