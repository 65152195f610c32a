"""MultiTargetModel and fit_multi_target on small synthetic data: schema refusal, round trip, determinism."""

from __future__ import annotations

import pickle

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from core.config import LabelSpec
from core.errors import SchemaMismatchError
from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.model import OPTIONAL_TARGETS, REQUIRED_TARGETS, MultiTargetModel, target_values
from tune.train import fit_multi_target, join_features_labels, target_params

SPEC_HASH = LabelSpec().spec_hash()
N_FEATURES = len(FEATURE_NAMES)
FAST = {"num_leaves": 7, "min_data_in_leaf": 20, "learning_rate": 0.1}


def synthetic(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features (ts, schema_version, 132 columns) and labels_1m-like rows; ~10% have status ≠ 0."""
    rng = np.random.default_rng(seed)
    ts = 28_333_440 * 60_000 + np.arange(n, dtype=np.int64) * 60_000
    x = rng.normal(size=(n, N_FEATURES))
    x[rng.random((n, N_FEATURES)) < 0.02] = np.nan  # features may be NaN (warm-up)
    signal = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 50])
    features = pd.DataFrame(x, columns=list(FEATURE_NAMES))
    features.insert(0, "schema_version", FEATURE_SCHEMA_VERSION)
    features.insert(0, "ts", ts)
    status = np.where(rng.random(n) < 0.1, 1, 0).astype(np.int8)
    labels = {"ts": ts, "status": status}
    for side, sign in (("long", 1.0), ("short", -1.0)):
        ret = 0.004 * sign * signal + 0.01 * rng.standard_t(4, n)
        y = np.where(ret > 0.008, 1, np.where(ret < -0.006, -1, 0))
        labels |= {
            f"{side}_y": y,
            f"{side}_ret_net": ret,
            f"{side}_mae": np.abs(0.005 + 0.002 * sign * signal + 0.003 * rng.normal(size=n)),
            f"{side}_mfe": np.abs(rng.normal(0.01, 0.003, n)),
            f"{side}_time_to_event_min": rng.integers(1, 61, n).astype(np.int32),
            f"{side}_exit_reason": np.zeros(n, np.int8),
        }
    frame = pd.DataFrame(labels)
    bad = frame["status"] != 0  # unlabelled rows carry no label (core.labels)
    for side in ("long", "short"):
        frame.loc[bad, [f"{side}_ret_net", f"{side}_mae", f"{side}_mfe"]] = np.nan
        frame.loc[bad, f"{side}_time_to_event_min"] = -1
        frame.loc[bad, f"{side}_y"] = 0
    return features, frame


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return synthetic(2500, seed=0)


@pytest.fixture(scope="module")
def model(data) -> MultiTargetModel:
    features, labels = data
    return fit_multi_target(features, labels, label_spec_hash=SPEC_HASH, params=FAST, num_boost_round=40,
                            include_p_tp=True)  # fmt: skip


def test_predict_returns_every_output_in_order_with_one_value_per_row(model, data):
    features, _ = data
    out = model.predict(features.iloc[:300], FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    assert tuple(out) == model.targets == REQUIRED_TARGETS + OPTIONAL_TARGETS
    assert REQUIRED_TARGETS == ("er_long", "er_short", "q05_long", "q05_short", "e_mae_long", "e_mae_short",
                                "e_hold_long", "e_hold_short")  # fmt: skip
    for values in out.values():
        assert values.shape == (300,) and values.dtype == np.float64 and np.isfinite(values).all()
    assert (out["e_mae_long"] >= 0).all() and (out["e_hold_short"] >= 1).all()
    assert ((out["p_tp_long"] >= 0) & (out["p_tp_long"] <= 1)).all()
    frame = model.predict_frame(features.iloc[:300], FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    assert list(frame.columns) == list(model.targets) and len(frame) == 300


def test_frame_columns_in_any_order_and_matrix_predict_the_same(model, data):
    features, _ = data
    rows = features.iloc[:200]
    shuffled = rows[list(reversed(rows.columns))].assign(extra=1.0)
    a = model.predict(rows[list(FEATURE_NAMES)].to_numpy(), FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    b = model.predict(shuffled, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    one = model.predict(rows[list(FEATURE_NAMES)].to_numpy()[7], FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    for t in model.targets:
        np.testing.assert_array_equal(a[t], b[t])
        assert one[t].shape == (1,) and one[t][0] == a[t][7]


def test_model_refuses_features_of_another_schema_naming_both(model, data):
    features, _ = data
    x = features[list(FEATURE_NAMES)].to_numpy()[:5]
    with pytest.raises(
        SchemaMismatchError, match=rf"v{FEATURE_SCHEMA_VERSION + 1}.*v{FEATURE_SCHEMA_VERSION}"
    ):
        model.predict(x, FEATURE_SCHEMA_VERSION + 1, SCHEMA_HASH)
    with pytest.raises(SchemaMismatchError, match=rf"deadbeefdeadbeef.*{SCHEMA_HASH}"):
        model.predict(x, FEATURE_SCHEMA_VERSION, "deadbeefdeadbeef")
    with pytest.raises(SchemaMismatchError, match="features per row"):
        model.predict(x[:, :-1], FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    with pytest.raises(SchemaMismatchError, match="lack 1 feature"):
        model.predict(features.drop(columns=[FEATURE_NAMES[3]]), FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    with pytest.raises(SchemaMismatchError, match="schema_version"):
        model.predict(features.assign(schema_version=2), FEATURE_SCHEMA_VERSION, SCHEMA_HASH)


def test_bytes_round_trip_predicts_bit_identical_values(model, data):
    features, _ = data
    blob = model.to_bytes()
    again = MultiTargetModel.from_bytes(blob)
    assert again.to_bytes() == blob and again.fingerprint() == model.fingerprint()
    assert again.label_spec_hash == SPEC_HASH and again.feature_schema_hash == SCHEMA_HASH
    assert again.metadata == model.metadata
    a = model.predict(features, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    b = again.predict(features, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, num_threads=1)
    c = pickle.loads(pickle.dumps(model)).predict(features, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    for t in model.targets:
        assert a[t].tobytes() == b[t].tobytes() == c[t].tobytes()


def test_blob_of_another_schema_or_format_is_refused(model):
    import json

    blob = json.loads(model.to_bytes())
    with pytest.raises(SchemaMismatchError, match=rf"v2 .*v{FEATURE_SCHEMA_VERSION}"):
        MultiTargetModel.from_bytes(json.dumps(blob | {"feature_schema_version": 2}).encode())
    with pytest.raises(ValueError, match="format"):
        MultiTargetModel.from_bytes(json.dumps(blob | {"format_version": 99}).encode())
    with pytest.raises(ValueError, match="not a raytrade"):
        MultiTargetModel.from_bytes(b"\x00garbage")


def test_identical_inputs_train_identical_models(data):
    features, labels = data
    kw = dict(label_spec_hash=SPEC_HASH, params=FAST, num_boost_round=15, seed=3)
    a = fit_multi_target(features, labels, **kw)
    b = fit_multi_target(features, labels, **kw)
    assert a.to_bytes() == b.to_bytes()
    assert a.fingerprint() != fit_multi_target(features, labels, **(kw | {"seed": 4})).fingerprint()


def test_only_status_zero_rows_train(model, data):
    features, labels = data
    n_ok = int((labels["status"] == 0).sum())
    assert all(model.metadata["targets"][t]["train_rows"] == n_ok for t in model.targets)
    # whatever the unlabelled rows say, the model is the same
    noisy = labels.copy()
    bad = noisy["status"] != 0
    noisy.loc[bad, "long_ret_net"] = 5.0
    noisy.loc[bad, "long_y"] = 1
    kw = dict(label_spec_hash=SPEC_HASH, params=FAST, num_boost_round=10, targets=["er_long", "p_tp_long"])
    with pytest.raises(ValueError, match="missing"):  # a model needs the eight outputs
        fit_multi_target(features, noisy, **kw)
    kw["targets"] = [*REQUIRED_TARGETS, "p_tp_long"]
    assert (
        fit_multi_target(features, noisy, **kw).fingerprint()
        == fit_multi_target(features, labels, **kw).fingerprint()
    )


def test_quantile_model_predicts_below_the_mean_model(model, data):
    features, labels = data
    out = model.predict(features, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    for side in ("long", "short"):
        assert out[f"q05_{side}"].mean() < out[f"er_{side}"].mean()
        assert np.mean(out[f"q05_{side}"] < out[f"er_{side}"]) > 0.95
        ok = labels["status"].to_numpy() == 0
        coverage = np.mean(labels[f"{side}_ret_net"].to_numpy()[ok] < out[f"q05_{side}"][ok])
        assert 0.01 < coverage < 0.12  # in-sample share below the 5% quantile
    # the mean model learned the signal: correlation with the long return is positive, short negative
    ok = labels["status"].to_numpy() == 0
    assert np.corrcoef(out["er_long"][ok], labels["long_ret_net"][ok])[0, 1] > 0.2


def test_early_stopping_keeps_the_best_iteration_and_round_trips(data):
    features, labels = data
    train, valid = features.iloc[:2000], features.iloc[2000:]
    m = fit_multi_target(train, labels.iloc[:2000], label_spec_hash=SPEC_HASH, params=FAST | {"learning_rate": 0.3},
                         num_boost_round=200, valid=(valid, labels.iloc[2000:]), early_stopping_rounds=5)  # fmt: skip
    iterations = {t: m.metadata["targets"][t]["iterations"] for t in m.targets}
    assert all(1 <= n < 200 for n in iterations.values()), iterations
    assert all(m.booster(t).current_iteration() == iterations[t] for t in m.targets)
    again = MultiTargetModel.from_bytes(m.to_bytes())
    a = m.predict(valid, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    b = again.predict(valid, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    assert all(a[t].tobytes() == b[t].tobytes() for t in m.targets)


def test_constructor_refuses_wrong_boosters(model, data):
    boosters = {t: model.booster(t) for t in model.targets}
    with pytest.raises(ValueError, match="missing"):
        MultiTargetModel({t: b for t, b in boosters.items() if t != "q05_short"}, label_spec_hash=SPEC_HASH)
    with pytest.raises(ValueError, match="objective 'regression', expected 'quantile'"):
        MultiTargetModel(boosters | {"q05_long": boosters["er_long"]}, label_spec_hash=SPEC_HASH)
    with pytest.raises(SchemaMismatchError, match=r"v7 .*retrain"):
        MultiTargetModel(boosters, label_spec_hash=SPEC_HASH, feature_schema_version=7)
    features, labels = data
    other = lgb.train(target_params("er_long", FAST), lgb.Dataset(features[list(FEATURE_NAMES[:5])].to_numpy(),
                      labels["long_ret_net"].fillna(0).to_numpy()), 2)  # fmt: skip
    with pytest.raises(SchemaMismatchError, match="feature names"):
        MultiTargetModel(boosters | {"er_long": other}, label_spec_hash=SPEC_HASH)


def test_fit_refuses_other_schemas_and_misaligned_rows(data):
    features, labels = data
    with pytest.raises(SchemaMismatchError):
        fit_multi_target(features, labels, label_spec_hash=SPEC_HASH, feature_schema_version=2)
    with pytest.raises(SchemaMismatchError, match="join them first"):
        fit_multi_target(features.iloc[:10], labels, label_spec_hash=SPEC_HASH)
    with pytest.raises(ValueError, match="may not set"):
        fit_multi_target(features, labels, label_spec_hash=SPEC_HASH, params={"objective": "huber"})


def test_targets_come_from_the_labels_columns(data):
    _, labels = data
    np.testing.assert_array_equal(target_values("q05_short", labels), labels["short_ret_net"].to_numpy())
    np.testing.assert_array_equal(
        target_values("e_hold_long", labels), labels["long_time_to_event_min"].to_numpy()
    )
    np.testing.assert_array_equal(
        target_values("p_tp_short", labels), (labels["short_y"] == 1).to_numpy(float)
    )


def test_join_features_labels_aligns_rows_by_time(data):
    features, labels = data
    joined = join_features_labels(features.sample(frac=1.0, random_state=1), labels.iloc[::-1])
    assert len(joined) == len(features) and joined["ts"].is_monotonic_increasing
    np.testing.assert_array_equal(joined[FEATURE_NAMES[0]], features[FEATURE_NAMES[0]])
    np.testing.assert_array_equal(joined["long_ret_net"], labels["long_ret_net"])


def test_targets_sharing_rows_share_one_dataset_and_train_the_same_boosters_as_one_dataset_each(data):
    """fit_multi_target bins the matrix once per distinct row set; the boosters must equal those of a
    fresh Dataset per target (the straightforward way), on train and validation sets whose rows differ
    between targets (a NaN target drops rows of that target only)."""
    features, labels = data
    labels = labels.copy()
    labels.loc[labels.index[::7], "long_mae"] = np.nan  # e_mae_long trains on fewer rows than the rest
    train_x, valid_x = features.iloc[:2000], features.iloc[2000:]
    train_y, valid_y = labels.iloc[:2000], labels.iloc[2000:]
    shared = fit_multi_target(train_x, train_y, label_spec_hash=SPEC_HASH, params=FAST, num_boost_round=60,
                              valid=(valid_x, valid_y), early_stopping_rounds=5, include_p_tp=True)  # fmt: skip
    matrix = train_x[list(FEATURE_NAMES)].to_numpy(np.float64)
    vmatrix = valid_x[list(FEATURE_NAMES)].to_numpy(np.float64)
    sizes = set()
    for target in shared.targets:
        rows = (train_y["status"].to_numpy() == 0) & np.isfinite(target_values(target, train_y))
        vrows = (valid_y["status"].to_numpy() == 0) & np.isfinite(target_values(target, valid_y))
        sizes.add(int(rows.sum()))
        own = lgb.Dataset(matrix[rows], label=target_values(target, train_y)[rows],
                          feature_name=list(FEATURE_NAMES), params={"verbose": -1})  # fmt: skip
        vown = lgb.Dataset(vmatrix[vrows], label=target_values(target, valid_y)[vrows], reference=own)
        booster = lgb.train(target_params(target, FAST, seed=0), own, 60, valid_sets=[vown],
                            callbacks=[lgb.early_stopping(5, verbose=False)])  # fmt: skip
        best = booster.best_iteration or booster.current_iteration()
        assert (
            shared.booster(target).model_to_string()
            == lgb.Booster(model_str=booster.model_to_string(num_iteration=best)).model_to_string()
        ), target
    assert len(sizes) == 2  # two row sets: the test covers both a shared and a separate Dataset
