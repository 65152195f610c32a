"""Defaults the command line shows in its help, in a module that imports nothing.

``raytrade research --help`` and ``raytrade demo --help`` show them without importing the flows
that use them (MLflow, LightGBM, Ray). ``tests/unit/test_cli_startup.py`` checks that they equal
the flows' own constants.
"""

from __future__ import annotations

#: The registered model (the strategy) the demo trains and ``research`` and ``run`` use by default.
MODEL_NAME = "raytrade-lgbm"
#: Minutes the demo replays in shadow after a promotion.
SHADOW_MINUTES = 1440
