"""Cost-aware triple-barrier labels of 1m bars, long and short (spec 001 §8, fill rules §10.1).

Exact semantics (the plain-Python reference in tests/unit/test_labels.py implements the same text):

Decision and entry. Bar i (open time ``ts[i]``) is the decision bar: the decision uses data up to its
close. ``ATR_t`` is the ATR of ``LabelSpec.atr_timeframe`` available at that close (``label_atr``:
15m Wilder ATR of complete 15m bars, causally aligned; "1m" the 1m ATR at bar i). Entry is at the
open of bar i + 1 (the simulator's rule) with slippage: ``s = slippage_k · ATR_t / close_i``
(``core.costs.slippage_fraction``), ``entry = open[i+1] · (1 + d·s)``, d = +1 long, −1 short.

Barriers, from the entry fill: ``TP = entry + d·k_tp·ATR_t``, ``SL = entry − d·k_sl·ATR_t``,
``RISK = entry − d·risk_mae_atr·ATR_t`` (beyond SL, since risk_mae_atr ≥ k_sl). With a ``tick_size``
(the symbol's price tick; default 0: none) TP and SL are rounded to it towards the entry fill, as the
simulator rounds its trigger prices.

Barrier price (``LabelSpec.barrier_price``). The simulator triggers SL/TP on the mark price
(``core.sim``), so by default the barriers watch the 1m mark candles: per bar, the mark candle of the
same minute (whose close is not NaN), else — no mark candle for that bar, or none given — the
last-price candle stands in, exactly as the backtest panel does (``build_panel``, ``mark_proxy=
"last"``). ``"last"`` watches the last price throughout. Below, ``high``/``low``/``bopen`` are the
barrier price's; ``open``/``close`` always last price (fills). Entry, ATR, slippage and the TIME exit
use last price in both modes. The spec hash covers ``barrier_price``.

Path. Bars j = i+1 … i+H (H = h_bars); the entry bar counts, so a barrier touched on it is an event.
The exit bar is the first j with a touch on high/low: long ``low ≤ SL`` or ``high ≥ TP``, short
``high ≥ SL`` or ``low ≤ TP`` (≥/≤: touching is enough).

- Adverse touch (also when TP is touched in the same bar: conservative) → y = −1. Exit price: the
  SL level, or — when the barrier price opened beyond it (``bopen[j]`` at or past SL: a gap through
  the stop) — the worse of SL and the last-price open (long ``min(SL, open[j])``, short
  ``max(SL, open[j])``). Exit reason RISK when the bar's adverse extreme reaches the RISK level (a
  crash bar: the MAE exceeds risk_mae_atr·ATR_t), else SL; RISK is counted as SL (same y, same exit
  price rule).
- Favourable touch only → y = +1, exit reason TP, exit price the TP level, or — when the barrier
  price opened at or beyond it — the worse of TP and the last-price open (with last-price barriers
  always TP).
- No touch → y = 0, exit reason TIME, exit price ``close[i+H]``.

These are ``core.sim.kernel.symbol_bar``'s rules for a position entered at bar i + 1's open with SL/TP
at these distances and the horizon as its time limit (no liquidation: the labels have no margin);
``tests/unit/test_labels_sim_agreement.py`` runs the simulator on every labelled entry of a
synthetic market and finds the same exit bar and kind for all of them.

Every exit fill pays slippage: ``exit = price · (1 − d·s)``, same s as the entry.

Return. ``ret_net = d·(exit − entry)/entry − fee_rate·(entry + exit)/entry − d·Σ funding_rate_k``
(``core.costs.net_return``): taker fee on both fills, funding of every real funding time F_k (from
the funding dataset, not a fixed grid) with ``entry_time < F_k ≤ exit_time``, where entry_time =
``ts[i+1]`` (= close of bar i) and exit_time = the close of the exit bar, ``ts[j] + 1m``: the touch
time inside the bar is unknown, so the position counts as held to the bar's close. A long pays
positive rates; funding is a fraction of the entry notional.

Excursions. ``mae``/``mfe`` ≥ 0 are the maximum adverse/favourable excursions of the barrier price
from the entry fill, as fractions of it, over bars i+1 … j−1 in full plus the exit bar j: its adverse extreme always counts
in full (so exit reason RISK ⇔ mae ≥ risk_mae_atr·ATR_t/entry on a stop exit); its favourable
extreme counts on a TIME exit, is capped at the barrier on a TP exit, and is left out on an SL/RISK
exit (the adverse move is taken to come first, as for the barrier rule).

Time. ``time_to_event_min = j − i`` = minutes from entry (``ts[i+1]``) to the close of the exit bar
(1 for the entry bar, H for TIME). Purging uses ``exit_time = ts[i] + (1 + time_to_event_min)·1m``;
a label's information never goes past ``ts[i] + (H + 1)·1m``.

Status (one per decision bar, both directions; the lowest applicable code is reported). A bar with
status ≠ OK has no label: y = 0, NaN return/excursions, time −1, exit reason NONE.
1 INCOMPLETE_HORIZON: i + H is beyond the data (the last H bars);
2 ATR_UNAVAILABLE: ATR_t NaN (warm-up), stale (its coarse bar is not the latest one because of a
gap) or ≤ 0; 3 GAP: some step of ``ts`` between bar i and bar i + H is not exactly 1m — the whole
window must be gap-free, even after an early exit, so validity does not depend on the outcome;
4 BAD_PRICE: a non-finite or non-positive open/high/low/close, or barrier open/high/low, in bars
i … i+H.

Event sampling: ``cusum_events`` and ``spike_events`` give decision bars to pass as ``index``.
"""

from core.labels.events import cusum_events, spike_events
from core.labels.triple_barrier import (
    DirectionLabels,
    ExitReason,
    LabelInputs,
    LabelStatus,
    TripleBarrierLabels,
    barrier_candles,
    cumulative_funding,
    label_atr,
    label_bars,
    prepare_label_inputs,
    run_label_kernel,
)

__all__ = [
    "DirectionLabels",
    "ExitReason",
    "LabelInputs",
    "LabelStatus",
    "TripleBarrierLabels",
    "barrier_candles",
    "cumulative_funding",
    "cusum_events",
    "label_atr",
    "label_bars",
    "prepare_label_inputs",
    "run_label_kernel",
    "spike_events",
]
