"""Lake frames into the database through the batched writer (``--to-db``, the demo)."""

from __future__ import annotations

from collections.abc import Collection

import pandas as pd

from pipelines.features import feature_db_rows
from pipelines.labels import label_db_rows
from storage.writer import BatchedWriter, WriterStats

#: Lake datasets with a database table, and the table. Candles go through the data-quality door.
DB_TABLES = {
    "candles_1m": "candles_1m",
    "candles_15m": "candles_15m",
    "candles_1h": "candles_1h",
    "funding": "funding_rates",
    "mark_1m": "premium_index",
    "features_1m": "features_1m",
    "labels_1m": "labels_long_1m, labels_short_1m",
}


class DatabaseSink:
    """``on_frame(dataset, symbol, frame)`` that writes lake frames to the database.

    Candles pass ``BatchedWriter.submit_candles`` (rows of unknown symbols or bad values become
    data-quality events, never candles); funding goes to ``funding_rates``; 1m mark candles to
    ``premium_index`` (mark price = the minute's close); features as JSON rows with their key
    columns; labels (labelled bars only) under ``label_spec_hash``. Datasets without a table are
    skipped.
    """

    def __init__(
        self,
        writer: BatchedWriter,
        known_symbols: Collection[str] | None,
        source: str,
        label_spec_hash: str | None = None,
    ) -> None:
        self.writer = writer
        self.known_symbols = known_symbols
        self.source = source
        self.label_spec_hash = label_spec_hash

    def __call__(self, dataset: str, symbol: str, frame: pd.DataFrame) -> None:
        if dataset.startswith("candles_"):
            self.writer.submit_candles(
                dataset.removeprefix("candles_"),
                frame.assign(symbol=symbol),
                self.known_symbols,
                source=self.source,
                block_timeout_s=60.0,
            )
        elif dataset == "funding":
            self.writer.submit("funding_rates", frame.assign(symbol=symbol), block_timeout_s=60.0)
        elif dataset == "mark_1m":
            rows = pd.DataFrame({"symbol": symbol, "ts": frame["ts"], "mark_price": frame["close"]})
            self.writer.submit("premium_index", rows, block_timeout_s=60.0)
        elif dataset == "features_1m":
            self.writer.submit("features_1m", feature_db_rows(symbol, frame), block_timeout_s=60.0)
        elif dataset == "labels_1m":
            if self.label_spec_hash is None:
                raise ValueError(f"{dataset}: a DatabaseSink for labels needs label_spec_hash")
            for side in ("long", "short"):
                rows = label_db_rows(symbol, frame, self.label_spec_hash, side)
                self.writer.submit(f"labels_{side}_1m", rows, block_timeout_s=60.0)

    def close(self) -> WriterStats:
        """Flush everything, stop the writer and return its counts."""
        self.writer.close()
        return self.writer.stats()
