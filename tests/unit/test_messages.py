"""Topics, message types and their MessagePack encoding (core/messages), without any bus."""

from __future__ import annotations

import math
import pickle
import struct

import msgspec
import numpy as np
import pytest
from message_samples import SAMPLES, TS_MS, candle

from core.errors import DataQualityError, FatalError
from core.messages import (
    MESSAGE_TYPES,
    BarClose,
    BookTicker,
    CandleClosed,
    DataQualityEvent,
    EntryIntent,
    MarketTick,
    MarkPrice,
    Message,
    Prediction,
    RiskEvent,
    SignalNew,
    Topic,
    TrainingUpdate,
    as_topic,
    check_message,
    decode,
    encode,
    encode_for,
    message_type,
)

TOPIC_NAMES = {
    "market.candle_closed",
    "market.mark_price",
    "market.book_ticker",
    "features.ready",
    "signals.new",
    "orders.update",
    "fills.new",
    "positions.update",
    "risk.event",
    "data_quality.event",
    "training.update",
    "system.status",
    "account.update",
}

PARAMS = [pytest.param(t, m, id=t.value) for t, m in SAMPLES.items()]


def _payload(**fields: object) -> bytes:
    return msgspec.msgpack.encode(fields)


def _candle_fields(**override: object) -> dict[str, object]:
    fields = {f: getattr(candle(1), f) for f in CandleClosed.__struct_fields__}
    fields.update(override)
    return fields


def test_topic_wire_names_are_the_documented_strings() -> None:
    assert {t.value for t in Topic} == TOPIC_NAMES


def test_every_topic_carries_its_own_message_type() -> None:
    assert set(MESSAGE_TYPES) == set(Topic)
    assert len(set(MESSAGE_TYPES.values())) == len(Topic)
    assert set(SAMPLES) == set(Topic)


def test_topic_compares_equal_to_its_string_and_parses_from_it() -> None:
    assert Topic.MARKET_CANDLE_CLOSED == "market.candle_closed"
    assert as_topic("fills.new") is Topic.FILLS_NEW
    assert message_type("market.book_ticker") is BookTicker


def test_unknown_topic_raises_fatal_error_naming_the_known_topics() -> None:
    with pytest.raises(FatalError, match=r"unknown bus topic 'market\.candles'.*market\.candle_closed"):
        as_topic("market.candles")


@pytest.mark.parametrize(("topic", "msg"), PARAMS)
def test_encode_then_decode_returns_an_equal_message_of_the_same_type(topic: Topic, msg: Message) -> None:
    out = decode(topic, encode(msg))
    assert type(out) is type(msg)
    assert out == msg


@pytest.mark.parametrize(("topic", "msg"), PARAMS)
def test_wire_format_is_a_msgpack_map_keyed_by_field_names(topic: Topic, msg: Message) -> None:
    raw = msgspec.msgpack.decode(encode(msg))
    assert isinstance(raw, dict)
    assert set(raw) == set(type(msg).__struct_fields__)


@pytest.mark.parametrize(("topic", "msg"), PARAMS)
def test_messages_are_frozen(topic: Topic, msg: Message) -> None:
    field = type(msg).__struct_fields__[0]
    with pytest.raises(AttributeError):
        setattr(msg, field, getattr(msg, field))


@pytest.mark.parametrize(("topic", "msg"), PARAMS)
def test_messages_refuse_positional_arguments(topic: Topic, msg: Message) -> None:
    values = [getattr(msg, f) for f in type(msg).__struct_fields__]
    with pytest.raises(TypeError):
        type(msg)(*values)


def test_float_fields_roundtrip_bit_exactly() -> None:
    price = 0.1 + 0.2  # 0.30000000000000004
    msg = MarkPrice(
        symbol="BTCUSDT",
        ts_ms=TS_MS,
        mark_price=price,
        index_price=5e-324 + 1e-300,
        funding_rate=-1e-308,
        next_funding_ts_ms=TS_MS,
    )
    out = decode(Topic.MARKET_MARK_PRICE, encode(msg))
    assert isinstance(out, MarkPrice)
    for name in ("mark_price", "index_price", "funding_rate"):
        assert struct.pack("<d", getattr(out, name)) == struct.pack("<d", getattr(msg, name))


def test_data_quality_event_carries_nan_and_infinity_in_its_payload() -> None:
    msg = DataQualityEvent(
        ts_ms=TS_MS,
        source="ingest.kline",
        symbol="BTCUSDT",
        reason="nan close",
        payload={"close": math.nan, "high": math.inf, "low": -math.inf},
    )
    out = decode(Topic.DATA_QUALITY_EVENT, encode(msg))
    assert isinstance(out, DataQualityEvent)
    assert math.isnan(out.payload["close"])
    assert out.payload["high"] == math.inf and out.payload["low"] == -math.inf


def test_data_quality_event_keeps_a_malformed_symbol_as_received() -> None:
    msg = DataQualityEvent(ts_ms=TS_MS, source="ingest", symbol="btc-usdt", reason="bad symbol")
    assert decode(Topic.DATA_QUALITY_EVENT, encode(msg)) == msg


def test_decode_of_bytes_that_are_not_msgpack_names_the_topic() -> None:
    with pytest.raises(DataQualityError, match=r"topic market\.candle_closed: .*CandleClosed.*malformed"):
        decode(Topic.MARKET_CANDLE_CLOSED, b"\xc1 not msgpack")


def test_decode_of_a_field_of_the_wrong_type_names_topic_and_field() -> None:
    with pytest.raises(DataQualityError, match=r"topic market\.candle_closed: .*\$\.close"):
        decode("market.candle_closed", _payload(**_candle_fields(close="94020.3")))


def test_decode_of_a_payload_missing_a_field_names_the_field() -> None:
    fields = _candle_fields()
    del fields["volume"]
    with pytest.raises(
        DataQualityError, match=r"topic market\.candle_closed: .*missing required field `volume`"
    ):
        decode(Topic.MARKET_CANDLE_CLOSED, _payload(**fields))


def test_decode_of_another_topics_payload_is_rejected() -> None:
    with pytest.raises(DataQualityError, match=r"topic market\.candle_closed"):
        decode(Topic.MARKET_CANDLE_CLOSED, encode(SAMPLES[Topic.MARKET_BOOK_TICKER]))


def test_decode_of_a_nan_price_is_rejected_naming_topic_and_field() -> None:
    with pytest.raises(
        DataQualityError, match=r"topic market\.candle_closed: .*CandleClosed\.close must be finite"
    ):
        decode(Topic.MARKET_CANDLE_CLOSED, _payload(**_candle_fields(close=math.nan)))


def test_decode_ignores_fields_it_does_not_know() -> None:
    out = decode(Topic.MARKET_CANDLE_CLOSED, _payload(**_candle_fields(), quote_volume=1.0))
    assert out == candle(1)


def test_decode_accepts_an_integer_where_a_float_belongs() -> None:
    out = decode(Topic.MARKET_CANDLE_CLOSED, _payload(**_candle_fields(volume=7)))
    assert isinstance(out, CandleClosed)
    assert out.volume == 7.0 and type(out.volume) is float


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"close": math.nan}, r"CandleClosed\.close must be finite"),
        ({"open": 0.0}, r"CandleClosed\.open must be > 0"),
        ({"volume": -1.0}, r"CandleClosed\.volume must be >= 0"),
        ({"high": 99.0}, r"high/low do not bound open/close"),
        ({"interval": "7m"}, r"CandleClosed\.interval must be one of"),
        ({"symbol": "btcusdt"}, r"CandleClosed\.symbol: .*not upper case"),
        ({"ts_ms": -1}, r"CandleClosed\.ts_ms must be epoch milliseconds"),
        ({"close": "100.1"}, r"CandleClosed\.close must be a number"),
    ],
    ids=[
        "nan_close",
        "zero_open",
        "negative_volume",
        "high_below_open",
        "bad_interval",
        "lowercase_symbol",
        "negative_ts",
        "string_close",
    ],
)
def test_building_a_bad_candle_raises_data_quality_error(override: dict[str, object], problem: str) -> None:
    with pytest.raises(DataQualityError, match=problem):
        CandleClosed(**_candle_fields(**override))  # type: ignore[arg-type]


def test_signal_decision_must_be_long_short_or_flat() -> None:
    with pytest.raises(DataQualityError, match=r"SignalNew\.decision must be one of LONG, SHORT, FLAT"):
        SignalNew(
            symbol="BTCUSDT", ts_ms=TS_MS, decision="HOLD", ev_long=0.0, ev_short=0.0, model_version="m1"
        )  # type: ignore[arg-type]


def test_signal_block_reasons_default_is_a_fresh_list_per_message() -> None:
    a = SignalNew(
        symbol="BTCUSDT", ts_ms=TS_MS, decision="LONG", ev_long=0.01, ev_short=0.0, model_version="m"
    )
    b = SignalNew(
        symbol="BTCUSDT", ts_ms=TS_MS, decision="LONG", ev_long=0.01, ev_short=0.0, model_version="m"
    )
    assert a.block_reasons == [] and a.block_reasons is not b.block_reasons


def test_training_progress_above_one_is_rejected() -> None:
    with pytest.raises(DataQualityError, match=r"TrainingUpdate\.progress must be <= 1"):
        TrainingUpdate(ts_ms=TS_MS, job_id="j1", status="running", progress=1.5)


def test_check_message_rejects_another_topics_type_naming_both() -> None:
    with pytest.raises(FatalError, match=r"topic market\.candle_closed carries CandleClosed, not BookTicker"):
        check_message("market.candle_closed", SAMPLES[Topic.MARKET_BOOK_TICKER])


def test_encode_for_rejects_another_topics_type() -> None:
    with pytest.raises(FatalError, match="not BookTicker"):
        encode_for(Topic.MARKET_CANDLE_CLOSED, SAMPLES[Topic.MARKET_BOOK_TICKER])


def test_encode_for_rejects_a_message_its_consumers_could_not_decode() -> None:
    # msgspec does not type-check at construction: an int in a str field would only fail downstream.
    msg = RiskEvent(ts_ms=TS_MS, event_type="guard", symbol=None, severity="info", message=5)  # type: ignore[arg-type]
    with pytest.raises(DataQualityError, match=r"topic risk\.event: .*\$\.message"):
        encode_for(Topic.RISK_EVENT, msg)


def test_encode_for_rejects_an_unencodable_value_naming_the_topic() -> None:
    msg = RiskEvent(
        ts_ms=TS_MS, event_type="guard", symbol=None, severity="info", message="x", details={"obj": object()}
    )
    with pytest.raises(DataQualityError, match=r"topic risk\.event: RiskEvent cannot be encoded"):
        encode_for(Topic.RISK_EVENT, msg)


def test_numpy_values_in_details_encode_as_plain_numbers() -> None:
    msg = RiskEvent(
        ts_ms=TS_MS,
        event_type="guard",
        symbol="BTCUSDT",
        severity="warning",
        message="x",
        details={"z": np.float64(1.5), "n": np.int64(3), "a": np.array([1, 2])},
    )
    out = decode(Topic.RISK_EVENT, encode_for(Topic.RISK_EVENT, msg))
    assert isinstance(out, RiskEvent)
    assert out.details == {"z": 1.5, "n": 3, "a": [1, 2]}
    assert type(out.details["n"]) is int


# --- realtime messages (Ray call arguments and answers, not bus payloads) -----------------------


def _prediction(**preds: object) -> Prediction:
    return Prediction(name="raytrade-lgbm", version="3", model_id="m-1", preds=preds)  # type: ignore[arg-type]


def test_prediction_gives_each_output_as_float64_with_its_row_count() -> None:
    answer = _prediction(er_long=np.array([0.01, -0.02], np.float32), e_hold_long=np.array([5, 7]))
    assert answer.rows == 2
    out = answer.output("e_hold_long")
    assert out.dtype == np.float64 and out.tolist() == [5.0, 7.0]
    assert answer.output("er_long")[0] == pytest.approx(0.01, rel=1e-6)
    assert _prediction().rows == 0


def test_prediction_with_outputs_of_different_lengths_or_shapes_is_refused() -> None:
    with pytest.raises(FatalError, match=r"raytrade-lgbm v3: outputs must be 1-D of one length"):
        _prediction(er_long=np.zeros(2), er_short=np.zeros(3))
    with pytest.raises(FatalError, match="1-D"):
        _prediction(er_long=np.zeros((2, 1)))


def test_prediction_names_the_outputs_when_one_is_missing() -> None:
    with pytest.raises(FatalError, match=r"no output 'q05_long'; it has \['er_long'\]"):
        _prediction(er_long=np.zeros(1)).output("q05_long")


def test_realtime_messages_survive_pickling_as_ray_sends_them() -> None:
    answer = _prediction(er_long=np.array([0.5, np.nan]))
    back = pickle.loads(pickle.dumps(answer))
    assert (back.name, back.version, back.model_id) == ("raytrade-lgbm", "3", "m-1")
    np.testing.assert_array_equal(back.preds["er_long"], answer.preds["er_long"])
    tick = MarketTick("BTCUSDT", TS_MS, 94_000.0, 93_999.9, 94_000.1)
    bar = BarClose("BTCUSDT", TS_MS, 1.0, 2.0, 0.5, 1.5, 1.0, 2.0, 0.5, 1.5, 1e6)
    assert pickle.loads(pickle.dumps(tick)) == tick and pickle.loads(pickle.dumps(bar)) == bar
    assert math.isnan(
        EntryIntent("BTCUSDT", TS_MS, 1, 0.1, 5, 90.0, 110.0, 100.0, 1.0, 1e6, 99.9, 100.1, TS_MS).mark
    )
