"""``POST /predict``: inference over HTTP, answering every model output with the model version.

Two request forms:

- JSON ``{"rows": [[f_0, …, f_131], …]}`` in feature-schema order (``core.features_schema``);
  ``null`` is a missing value (NaN), as JSON has no NaN.
- Binary, ``Content-Type: application/octet-stream``: one ``.npy`` file (``numpy.save``) holding a
  float64 array of shape (k, 132). Smaller and faster to parse than JSON for large blocks; never
  unpickled.

The answer is ``{"model_version": "…", "predictions": {output: [one value per row]}}``; a NaN output
is ``null``. A bad row width, an empty block or an unparsable body is a 422 naming the problem;
another content type is a 415. The rows go to a ``predict`` callable: in production the Serve
Predictor (``predictor_call(handle)``, batched there with ``@serve.batch``); ``model_call`` wraps a
model held in this process.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request, params, status

from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.jsonsafe import json_safe
from core.messages import Prediction
from core.model import MultiTargetModel

__all__ = ["NPY_MEDIA_TYPE", "PredictFn", "model_call", "predict_router", "predictor_call"]

#: The rows go in, every output (1-D, one value per row) and the model version come out.
PredictFn = Callable[[np.ndarray], Awaitable[tuple[dict[str, np.ndarray], str]]]

NPY_MEDIA_TYPE = "application/octet-stream"
_WIDTH = len(FEATURE_NAMES)


def predictor_call(handle: Any) -> PredictFn:
    """Adapt a Serve ``DeploymentHandle`` of the Predictor (serve/predictor.py) to a ``PredictFn``."""

    async def call(rows: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
        answer: Prediction = await handle.predict.remote(rows)
        return {key: answer.output(key) for key in answer.preds}, answer.version

    return call


def model_call(model: MultiTargetModel, version: str, *, num_threads: int = 1) -> PredictFn:
    """A ``PredictFn`` over a model held in this process (run in a worker thread, off the event loop)."""

    async def call(rows: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
        preds = await asyncio.to_thread(
            model.predict, rows, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, num_threads=num_threads
        )
        return preds, version

    return call


def _unprocessable(loc: Sequence[str | int], msg: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, [{"loc": ["body", *loc], "msg": msg, "type": "value_error"}]
    )


def rows_from_json(body: bytes) -> np.ndarray:
    """Parse ``{"rows": [[…], …]}`` into a float64 (k, 132) array; HTTPException 422 naming the problem."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise _unprocessable([], f"body is not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise _unprocessable(["rows"], 'body must be an object {"rows": [[...], ...]}')
    rows = doc["rows"]
    if not rows:
        raise _unprocessable(["rows"], "rows must hold at least one row")
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise _unprocessable(["rows", i], "each row must be a list of numbers")
        if len(row) != _WIDTH:
            raise _unprocessable(
                ["rows", i], f"row {i} has {len(row)} values; the feature schema v{FEATURE_SCHEMA_VERSION} "
                f"has {_WIDTH} ({FEATURE_NAMES[0]} … {FEATURE_NAMES[-1]})"
            )  # fmt: skip
        for j, v in enumerate(row):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise _unprocessable(
                    ["rows", i, j], f"{FEATURE_NAMES[j]} must be a number or null, got {v!r}"
                )
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)


def rows_from_npy(body: bytes) -> np.ndarray:
    """Load one ``.npy`` float64 (k, 132) array; HTTPException 422 naming the problem."""
    try:
        x = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _unprocessable([], f"body is not a .npy array (numpy.save, no pickle): {e}") from None
    if not isinstance(x, np.ndarray):
        raise _unprocessable([], f"body must be one .npy array, got {type(x).__name__}")
    if x.dtype != np.float64:
        raise _unprocessable([], f"array dtype must be float64, got {x.dtype}")
    if x.ndim != 2 or x.shape[1] != _WIDTH or x.shape[0] == 0:
        raise _unprocessable(
            [],
            f"array shape must be (k >= 1, {_WIDTH}) for feature schema v{FEATURE_SCHEMA_VERSION}, got {x.shape}",
        )
    return x


_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["rows"],
                    "properties": {
                        "rows": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "array",
                                "minItems": _WIDTH,
                                "maxItems": _WIDTH,
                                "items": {"type": ["number", "null"]},
                            },
                        }
                    },
                }
            },
            NPY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def predict_router(
    predict: PredictFn, *, max_rows: int = 10_000, dependencies: Sequence[params.Depends] | None = None
) -> APIRouter:
    """Return the router of ``POST /predict`` (forms and answers in the module docstring).

    ``max_rows`` caps one request (413 above it). ``dependencies`` (e.g. the token check) apply to
    the route.
    """
    router = APIRouter(dependencies=list(dependencies or []))

    @router.post(
        "/predict",
        summary="Predict every model output for feature rows",
        openapi_extra=_OPENAPI_BODY,
        responses={
            413: {"description": "more rows than the server accepts in one request"},
            415: {"description": "content type other than application/json or application/octet-stream"},
            422: {"description": "body not parsable, or rows not of the feature schema's width"},
            503: {"description": "the Predictor did not answer"},
        },
    )
    async def predict_endpoint(request: Request) -> dict[str, Any]:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()
        if media_type == "application/json":
            rows = rows_from_json(body)
        elif media_type == NPY_MEDIA_TYPE:
            rows = rows_from_npy(body)
        else:
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                f"content type {media_type or '(none)'!r} not accepted: send application/json "
                f"or {NPY_MEDIA_TYPE} (.npy)",
            )
        if len(rows) > max_rows:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, f"{len(rows)} rows; at most {max_rows} per request"
            )
        try:
            preds, version = await predict(rows)
        except Exception as e:  # the Predictor's failure is not the client's: a 503 naming it
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"the Predictor did not answer: {type(e).__name__}: {e}"
            ) from e
        return {"model_version": version, "predictions": json_safe(preds)}

    return router
