"""The MLflow pyfunc face of a ``MultiTargetModel`` (used by ``storage.registry``).

A version is logged as models-from-code: ``ENTRY_SCRIPT`` (written next to the blob at logging time)
builds ``MultiTargetPyfunc``, whose single artifact (key ``model``) is ``MultiTargetModel.to_bytes()``.
Loading it through ``mlflow.pyfunc.load_model`` needs this repository importable (as serving has it);
nothing is pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from core.features_schema import FEATURE_NAMES
from core.model import MultiTargetModel

__all__ = [
    "ENTRY_SCRIPT",
    "MODEL_ARTIFACT_FILE",
    "MODEL_ARTIFACT_KEY",
    "MultiTargetPyfunc",
    "model_signature",
    "pip_requirements",
]

MODEL_ARTIFACT_KEY = "model"
MODEL_ARTIFACT_FILE = "multi_target_model.json"

ENTRY_SCRIPT = '''"""MLflow models-from-code entry of a raytrade MultiTargetModel (written by storage.registry)."""
import mlflow

from storage.model_pyfunc import MultiTargetPyfunc

mlflow.models.set_model(MultiTargetPyfunc())
'''


class MultiTargetPyfunc(PythonModel):
    """The pyfunc face of a ``MultiTargetModel``: a frame of the 132 features in, one column per output out.

    ``params`` may state the rows' ``feature_schema_version`` and ``feature_schema_hash``; they default
    to the model's own, and another schema raises SchemaMismatchError like ``MultiTargetModel.predict``.
    """

    def __init__(self) -> None:
        self.model: MultiTargetModel | None = None

    def load_context(self, context: Any) -> None:
        self.model = MultiTargetModel.from_bytes(Path(context.artifacts[MODEL_ARTIFACT_KEY]).read_bytes())

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if self.model is None:
            raise RuntimeError("MultiTargetPyfunc used before load_context")
        p = params or {}
        version = int(p.get("feature_schema_version", self.model.feature_schema_version))
        hash_ = str(p.get("feature_schema_hash", self.model.feature_schema_hash))
        return self.model.predict_frame(model_input, version, hash_)


def model_signature(model: MultiTargetModel) -> ModelSignature:
    """Return the pyfunc signature: 132 double feature columns → one double column per output."""
    return ModelSignature(
        inputs=Schema([ColSpec("double", name) for name in FEATURE_NAMES]),
        outputs=Schema([ColSpec("double", target) for target in model.targets]),
        params=ParamSchema(
            [
                ParamSpec("feature_schema_version", "integer", model.feature_schema_version),
                ParamSpec("feature_schema_hash", "string", model.feature_schema_hash),
            ]
        ),
    )


def pip_requirements() -> list[str]:
    return [
        f"mlflow=={mlflow.__version__}",
        f"lightgbm=={lgb.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
    ]
