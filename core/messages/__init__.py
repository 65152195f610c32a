"""The only language live components speak to each other: import every message and name from here.

- ``core.messages.bus``: bus topics and their msgspec message types, encoded as MessagePack and
  checked again on decode (what crosses process and storage boundaries, and what observers read).
- ``core.messages.realtime``: the messages the realtime parts hand each other through Ray calls
  (market ticks and group closes, entry intents and closed bars, the Predictor's answer) and the
  names of the execution actor and the Predictor deployment they find each other by.

Live components never import each other for these (DESIGN.md, "Layout").
"""

from core.messages.bus import (
    MESSAGE_TYPES,
    AccountUpdate,
    BookTicker,
    CandleClosed,
    DataQualityEvent,
    Decision,
    FeaturesReady,
    FillNew,
    MarkPrice,
    Message,
    OrderSide,
    OrderUpdate,
    PositionUpdate,
    RiskEvent,
    Severity,
    SignalNew,
    SystemStatus,
    Topic,
    TrainingUpdate,
    as_topic,
    check_message,
    decode,
    encode,
    encode_for,
    message_type,
)
from core.messages.realtime import (
    EXECUTION_ACTOR_NAME,
    PREDICTOR_APP_NAME,
    PREDICTOR_DEPLOYMENT_NAME,
    BarClose,
    CloseEvent,
    CloseIntent,
    EntryIntent,
    IngestHook,
    MarketTick,
    Prediction,
    close_client_id,
)

__all__ = [
    "EXECUTION_ACTOR_NAME",
    "MESSAGE_TYPES",
    "AccountUpdate",
    "PREDICTOR_APP_NAME",
    "PREDICTOR_DEPLOYMENT_NAME",
    "BarClose",
    "BookTicker",
    "CandleClosed",
    "CloseEvent",
    "CloseIntent",
    "DataQualityEvent",
    "Decision",
    "EntryIntent",
    "FeaturesReady",
    "FillNew",
    "IngestHook",
    "MarkPrice",
    "MarketTick",
    "Message",
    "OrderSide",
    "OrderUpdate",
    "PositionUpdate",
    "Prediction",
    "RiskEvent",
    "Severity",
    "SignalNew",
    "SystemStatus",
    "Topic",
    "TrainingUpdate",
    "as_topic",
    "check_message",
    "close_client_id",
    "decode",
    "encode",
    "encode_for",
    "message_type",
]
