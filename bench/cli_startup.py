"""Start-up time of the ``raytrade`` command: wall seconds of ``raytrade --help`` and of each ``raytrade NAME --help``.

Each measurement starts a fresh process (the virtualenv's ``raytrade`` script), the way a user
types it; the figure is the median of ``--runs`` runs (``--command-runs`` for each command). The
slowest command's help is reported too: it imports the most of its command module. The last line
printed is JSON.

    python bench/cli_startup.py [--runs 9] [--command-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from raytrade.commands import COMMANDS

RAYTRADE = str(Path(sys.executable).parent / "raytrade")


def help_seconds(args: list[str], runs: int) -> float:
    """Return the median wall seconds of ``raytrade *args --help`` over ``runs`` fresh processes."""
    env = {**os.environ, "COLUMNS": "120"}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([RAYTRADE, *args, "--help"], env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of `raytrade --help`")
    parser.add_argument("--command-runs", type=int, default=3, help="runs of each `raytrade NAME --help`")
    args = parser.parse_args()
    help_s = help_seconds([], args.runs)
    print(f"raytrade --help: {help_s:.3f} s (median of {args.runs})")
    per_command = {}
    for name, _, _ in COMMANDS:
        per_command[name] = round(help_seconds([name], args.command_runs), 3)
        print(f"raytrade {name} --help: {per_command[name]:.3f} s (median of {args.command_runs})")
    slowest = max(per_command, key=per_command.__getitem__)
    print(json.dumps({"help_s": round(help_s, 3), "slowest_command_help_s": per_command[slowest],
                      "slowest_command": slowest, "command_help_s": per_command, "runs": args.runs,
                      "command_runs": args.command_runs, "load_1m": round(os.getloadavg()[0], 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
