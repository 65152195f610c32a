"""MultiTargetModel.contributions: LightGBM's own pred_contrib on a real small model — the parts sum to
the raw prediction, the top features are ordered by |contribution|, top_k holds, another schema is refused."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from core.config import LabelSpec
from core.errors import SchemaMismatchError
from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.model import MultiTargetModel
from tune.train import fit_multi_target

N = len(FEATURE_NAMES)


@lru_cache(maxsize=1)
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    n = 300
    x = rng.normal(size=(n, N))
    x[rng.random(x.shape) < 0.03] = np.nan
    signal = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 7])
    labels: dict[str, np.ndarray] = {"status": np.zeros(n, np.int8)}
    for side, sign in (("long", 1.0), ("short", -1.0)):
        ret = 0.004 * sign * signal + 0.002 * rng.normal(size=n)
        labels |= {
            f"{side}_y": np.where(ret > 0.003, 1, np.where(ret < -0.003, -1, 0)),
            f"{side}_ret_net": ret,
            # centred near 0 / 1 so predict() clips some rows: contributions stay in raw space
            f"{side}_mae": 0.0005 * signal + 0.0002 * rng.normal(size=n),
            f"{side}_time_to_event_min": 1.0 + 2.0 * signal,
        }
    return pd.DataFrame(x, columns=list(FEATURE_NAMES)), pd.DataFrame(labels)


@lru_cache(maxsize=1)
def model() -> MultiTargetModel:
    x, labels = data()
    return fit_multi_target(x, labels, label_spec_hash=LabelSpec().spec_hash(), include_p_tp=True,
                            params={"num_leaves": 7, "min_data_in_leaf": 20, "learning_rate": 0.1},
                            num_boost_round=8)  # fmt: skip


def rows(n: int = 12) -> np.ndarray:
    return data()[0].iloc[:n].to_numpy(np.float64)


def test_base_plus_contributions_is_the_raw_prediction() -> None:
    m, x = model(), rows()
    contrib = m.contribution_matrix(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    preds = m.predict(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    assert set(contrib) == set(m.targets) and "p_tp_long" in contrib
    clipped = 0
    for target, c in contrib.items():
        assert c.shape == (len(x), N + 1)
        raw = np.asarray(m.booster(target).predict(x, raw_score=True))
        np.testing.assert_allclose(c.sum(axis=1), raw, rtol=0, atol=1e-9, err_msg=target)
        if target.startswith("p_tp"):  # log-odds: the sigmoid of the sum is the probability
            np.testing.assert_allclose(1 / (1 + np.exp(-c.sum(axis=1))), preds[target], atol=1e-12)
        elif target.startswith(("e_mae", "e_hold")):  # predict() clips; the raw sum does not
            clipped += int((c.sum(axis=1) != preds[target]).sum())
            np.testing.assert_allclose(
                np.clip(c.sum(axis=1), m_lower(target), None), preds[target], atol=1e-12
            )
        else:
            np.testing.assert_allclose(c.sum(axis=1), preds[target], atol=1e-12, err_msg=target)
    assert clipped > 0  # the data makes some e_mae/e_hold predictions fall below their bounds


def m_lower(target: str) -> float:
    return 0.0 if target.startswith("e_mae") else 1.0


def test_top_features_are_ordered_by_absolute_contribution_with_their_values() -> None:
    m, x = model(), rows()
    full = m.contribution_matrix(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    out = m.contributions(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, top_k=5)
    assert len(out) == len(x)
    for i, per_target in enumerate(out):
        assert list(per_target) == list(m.targets)
        for target, part in per_target.items():
            c = full[target][i]
            assert part["base"] == c[-1]
            top = part["top"]
            assert 1 <= len(top) <= 5
            mags = [abs(t["contribution"]) for t in top]
            assert mags == sorted(mags, reverse=True)
            # nothing left out is larger than the smallest kept
            kept = {t["feature"] for t in top}
            others = [abs(c[j]) for j, f in enumerate(FEATURE_NAMES) if f not in kept]
            assert max(others) <= mags[-1]
            for t in top:
                j = FEATURE_NAMES.index(t["feature"])
                assert t["contribution"] == c[j]
                assert t["value"] == (None if np.isnan(x[i, j]) else x[i, j])
    # the signal features drive the return outputs
    assert out[0]["er_long"]["top"][0]["feature"] in (FEATURE_NAMES[0], FEATURE_NAMES[7])


def test_top_k_bounds_the_list() -> None:
    m, x = model(), rows(3)
    for k in (1, 2, 3):
        out = m.contributions(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, top_k=k)
        assert all(len(r[t]["top"]) <= k for r in out for t in r)
        assert any(len(r[t]["top"]) == k for r in out for t in r)
    one = m.contributions(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, top_k=1)
    five = m.contributions(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, top_k=5)
    assert all(one[i][t]["top"][0] == five[i][t]["top"][0] for i in range(3) for t in m.targets)
    with pytest.raises(ValueError, match="top_k"):
        m.contributions(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, top_k=0)


def test_a_frame_in_any_column_order_gives_the_same_answer() -> None:
    m, x = model(), rows(4)
    frame = pd.DataFrame(x, columns=list(FEATURE_NAMES))[list(reversed(FEATURE_NAMES))]
    assert m.contributions(frame, FEATURE_SCHEMA_VERSION, SCHEMA_HASH) == m.contributions(
        x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH
    )


def test_another_schema_is_refused() -> None:
    m, x = model(), rows(2)
    with pytest.raises(SchemaMismatchError, match=f"v{FEATURE_SCHEMA_VERSION + 1}"):
        m.contributions(x, FEATURE_SCHEMA_VERSION + 1, SCHEMA_HASH)
    with pytest.raises(SchemaMismatchError, match="deadbeef"):
        m.contribution_matrix(x, FEATURE_SCHEMA_VERSION, "deadbeef")
    with pytest.raises(SchemaMismatchError, match="features per row"):
        m.contributions(x[:, :-1], FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
