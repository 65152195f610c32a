"""The fault-injection suite of issue 15 (``bench/live_faults.py``'s scenarios) in the test run: each
scenario drives the live book against the replay venue with one fault, and passes only when the
venue's own record and the ledger agree — no duplicate order, time naked within 1 s, every fill in
the ledger once, equal positions, no orphan protection, the kill switch in the expected state."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location(
    "live_faults", Path(__file__).parents[2] / "bench" / "live_faults.py"
)
assert _spec is not None and _spec.loader is not None
live_faults: Any = importlib.util.module_from_spec(_spec)
sys.modules["live_faults"] = live_faults  # its dataclasses look their module up
_spec.loader.exec_module(live_faults)


@pytest.mark.parametrize("scenario", live_faults.SCENARIOS, ids=lambda f: f.__name__)
def test_the_venue_and_the_ledger_agree_after_the_fault(scenario: Any, shared_data: Path) -> None:
    info = live_faults.filter_exchange_info(live_faults.load_exchange_info(shared_data), [live_faults.BTC])
    with live_faults.harness(info) as h:
        out = scenario(h)
    assert out.passed, out
