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

# The demo's size. The planted edge is a lead-lag from BTC, so the label noise it must be found in is
# mostly BTC's own future path, common to every symbol: days of history buy evidence, symbols barely do.
# 12 symbols × 10 days (history-sized folds of 3.75 / 1.25 / 1.25 days) lost on its last test window and
# failed the fold-stability gates; 6 symbols × 24 days (9 / 3 / 3 days) passed every gate and costs about
# the same (207,360 training rows). bench/RESULTS.md, "make demo".
#: Symbols of the demo: the first N of the universe (BTCUSDT, the edge's leader, comes first).
DEMO_SYMBOLS = 6
#: Days of synthetic 1m history of the demo.
DEMO_DAYS = 24.0
#: LightGBM boosting rounds per output of the demo's and research's sweeps (the controls' size,
#: tune.controls.ControlSize): with default_search_space's learning rates of 0.03-0.1.
DEMO_ROUNDS = 60
