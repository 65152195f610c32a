"""One door for every market write into the lake: screened rows, conflicts refused, events kept.

History, import and the synthetic market all write through ``write_through_door``: rows pass
storage.candle_door.screen_rows (core.quality.check_rows) before the lake; rows whose ``ts`` the
lake already holds with other values are refused unless ``replace`` is asked for; rows the lake
holds identically change nothing. The rejected rows come back as ``events`` rows (with their raw
values) for the caller to record (storage.candle_door.RejectionLog).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.quality import Rejection
from core.time import ms_to_text
from storage.candle_door import screen_rows
from storage.lake import Lake

#: Conflicting timestamps named in a report.
CONFLICT_EXAMPLES = 3


@dataclass(frozen=True, slots=True)
class DoorWrite:
    """What one write through the door did.

    ``rows_stored``: rows the lake now holds from this write (new, identical or replaced);
    ``rejected``: rows refused by the door, by reason (their ``events`` rows are in ``events``);
    ``conflicts``: rows refused because the lake holds their ``ts`` with other values (0 with
    ``replace``: then ``replaced`` counts them), ``conflict_ts`` the first few of those ``ts``.
    """

    dataset: str
    symbol: str
    rows_in: int
    rows_stored: int
    rejected: dict[str, int]
    rejections: tuple[Rejection, ...]
    events: tuple[dict[str, Any], ...]
    conflicts: int
    conflict_ts: tuple[int, ...]
    replaced: int
    frame: pd.DataFrame

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    def conflict_message(self) -> str:
        """Return what was refused as conflicting and how to take the new values ('' if nothing)."""
        if not self.conflicts:
            return ""
        first = ", ".join(ms_to_text(t) for t in self.conflict_ts)
        more = f" … ({self.conflicts} in all)" if self.conflicts > len(self.conflict_ts) else ""
        return (
            f"{self.dataset} {self.symbol}: {self.conflicts} row(s) differ from what the lake holds "
            f"(first ts: {first}{more}); kept the stored rows. Pass --replace to take the new values."
        )


def write_through_door(
    lake: Lake,
    dataset: str,
    symbol: str,
    frame: pd.DataFrame | Mapping[str, np.ndarray],
    *,
    source: str,
    now_ms: int,
    replace: bool = False,
    extra_rejections: Iterable[tuple[str, str, Mapping[str, Any]]] = (),
) -> DoorWrite:
    """Screen ``frame`` (rows of ``dataset`` for ``symbol``) and write what passes into ``lake``.

    Rows refused by the door are not written and come back as events stamped ``now_ms``. Rows that
    would change stored rows are refused (``replace`` False) or replace them (``replace`` True).
    """
    extras = list(extra_rejections)
    screen = screen_rows(dataset, symbol, frame, source=source, now_ms=now_ms, extra_rejections=extras)
    accepted = screen.accepted
    rows_in = len(np.asarray(frame["ts"])) + len(extras)
    differ = lake.differing(dataset, symbol, accepted)
    n_differ = int(differ.sum())
    conflict_ts = tuple(int(t) for t in accepted["ts"][differ][:CONFLICT_EXAMPLES])
    if n_differ and not replace:
        accepted = {k: v[~differ] for k, v in accepted.items()}
    out = pd.DataFrame(accepted)
    if len(out):
        out = out.sort_values("ts", kind="stable").reset_index(drop=True)
        lake.write(dataset, symbol, out, source)
    return DoorWrite(
        dataset=dataset,
        symbol=symbol,
        rows_in=rows_in,
        rows_stored=len(out),
        rejected=dict(Counter(r.reason for r in screen.rejections)),
        rejections=tuple(screen.rejections),
        events=tuple(screen.events),
        conflicts=0 if replace else n_differ,
        conflict_ts=() if replace else conflict_ts,
        replaced=n_differ if replace else 0,
        frame=out,
    )
