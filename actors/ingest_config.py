"""Configuration of one ingest actor (``actors.ingest``) and of its minute-closing rules (``actors.ingest_book``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.config import WriterConfig
from core.symbols import parse_universe
from core.time import INTERVAL_MS


class IngestConfig(BaseModel):
    """One ingest actor's configuration. Times in venue milliseconds (``_ms``) or wall seconds (``_s``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: int = Field(ge=0, description="index of the symbol group")
    symbols: tuple[str, ...] = Field(
        description="the group's symbols (internal form); BTCUSDT is streamed too"
    )
    rest_url: str = Field(description="REST base, e.g. https://fapi.binance.com or the replay venue's URL")
    ws_url: str = Field(
        description="stream base (python-binance FSTREAM_URL), e.g. wss://fstream.binance.com/"
    )
    database_url: str = Field(description="SQLAlchemy URL of the database the writer fills")
    lake_path: str | None = Field(None, description="parquet lake with the history for the warm-up")
    bus_url: str | None = Field(None, description="Redis URL of the event bus; None publishes nothing")
    intervals: tuple[str, ...] = Field(("1m", "15m", "1h"), description="kline intervals streamed and stored")
    silence_s: dict[str, float] = Field(
        default_factory=lambda: {"markPrice": 10.0, "bookTicker": 30.0, "kline_1m": 90.0},
        description="wall seconds without a message of a stream kind before its connection is renewed",
    )
    connection_silence_s: float = Field(
        10.0, gt=0, description="wall seconds without any message → reconnect"
    )
    backoff_base_s: float = Field(0.5, gt=0, description="first reconnect wait, wall seconds")
    backoff_cap_s: float = Field(30.0, gt=0, description="longest reconnect wait, wall seconds")
    max_connection_age_s: float = Field(
        23.5 * 3600, gt=0, description="renew a connection after this long (Binance closes at 24 h)"
    )
    overlap_s: float = Field(5.0, ge=0, description="how long old and new connection overlap at renewal")
    close_deadline_ms: int = Field(
        3000,
        ge=0,
        description="venue ms after a minute's end to wait for all 1m bars before fetching/marking",
    )
    mark_max_age_ms: int = Field(5000, gt=0, description="mark older than this (venue ms) is stale")
    book_max_age_ms: int = Field(30_000, gt=0, description="book older than this (venue ms) is stale")
    mark_source: Literal["ticks", "rest"] = Field(
        "ticks",
        description="mark/premium of a minute from the stream's ticks (REST when incomplete) or always REST",
    )
    mark_tick_tolerance_ms: int = Field(
        2000, ge=0, description="a minute counts as covered by ticks if they flowed from its start + this"
    )
    warmup_minutes: int = Field(
        3 * 1440, ge=1, description="history fetched over REST when the lake has none"
    )
    max_topup_minutes: int = Field(7 * 1440, ge=1, description="REST top-up after the lake's end at most")
    tick_batch_ms: int = Field(20, ge=0, le=100, description="on_ticks gathers a burst this long (wall ms)")
    max_queue_size: int = Field(100_000, ge=100, description="messages python-binance may queue per socket")
    writer: WriterConfig = Field(default_factory=WriterConfig)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return parse_universe(list(v))

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [i for i in v if i not in INTERVAL_MS]
        if bad or "1m" not in v:
            raise ValueError(f"intervals must include 1m and be known kline intervals, got {v}")
        return v
