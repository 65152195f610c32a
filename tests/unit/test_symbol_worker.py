"""Per-symbol Ray task set-up (pipelines.raydata.prepare_symbol_worker), in fresh interpreters: it
changes process-wide settings (numba threads, glibc malloc), so it never runs in the test process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# One symbol's worth of arrays of the label pipeline's sizes, allocated and freed 20 times; prints the
# minor page faults that cost and the numba thread count.
_WORKLOAD = """
import resource, sys
import numba
import numpy as np
from pipelines.raydata import prepare_symbol_worker
if sys.argv[1] == "prepared":
    prepare_symbol_worker()
    prepare_symbol_worker()  # idempotent
def one_symbol():
    sizes = (525_600, 262_144, 65_536, 525_600 // 8)
    arrays = [np.ones(n) for n in sizes] + [np.ones(525_600, np.int8), np.ones(525_600, np.int32)]
    del arrays
one_symbol()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    one_symbol()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, numba.get_num_threads())
"""


def _run(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _WORKLOAD, mode], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
def test_prepared_worker_reuses_freed_memory_and_runs_numba_on_one_thread() -> None:
    default_faults, _ = _run("default")
    prepared_faults, threads = _run("prepared")
    assert threads == 1
    assert default_faults > 10_000  # glibc's default: every large free goes back to the kernel
    assert prepared_faults < default_faults // 20
