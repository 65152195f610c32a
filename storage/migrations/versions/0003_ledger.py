"""ledger: algo_orders, sync_cursors, income; client ids as Binance keeps them

- ``algo_orders`` keyed by (symbol, algo_id): Binance's algoId and orderId are separate counters, so
  a conditional order cannot share ``orders``' key; its triggered child is an ``orders`` row whose
  ``parent_algo_id`` names it.
- ``sync_cursors``: per symbol, the last trade id known complete in ``fills`` (REST backfill).
- ``income``: ``/fapi/v1/income`` records (funding fees), for PnL recomputed with funding.
- ``orders.client_order_id`` loses NOT NULL and its global unique constraint: client ids are unique
  only among open orders at the venue, and a REST trade names its order but not the client id.
  Indexed by (symbol, client_order_id) instead.
- ``fills.is_maker``; ``engine_signals.client_order_id`` (the order a signal led to, spec 004 §3 A).

On SQLite the ``orders`` table is rebuilt (no ALTER COLUMN there); ``fills`` references it, so its
rows are set aside in a temporary table for the rebuild and put back.

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-10
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import storage.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "algo_orders",
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("algo_id", sa.BigInteger(), nullable=False),
        sa.Column("client_algo_id", sa.Text(), nullable=False),
        sa.Column("algo_type", sa.Text(), server_default="CONDITIONAL", nullable=False),
        sa.Column("type", sa.Text(), nullable=False, comment="STOP_MARKET, TAKE_PROFIT_MARKET, …"),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column(
            "status", sa.Text(), nullable=False, comment="NEW, TRIGGERING, TRIGGERED, FINISHED, CANCELED, …"
        ),
        sa.Column("qty", sa.Float(precision=53), nullable=False, comment="0 for closePosition"),
        sa.Column("trigger_price", sa.Float(precision=53), nullable=False),
        sa.Column("price", sa.Float(precision=53), nullable=True),
        sa.Column("close_position", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("reduce_only", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("price_protect", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("working_type", sa.Text(), nullable=True),
        sa.Column(
            "child_order_id",
            sa.BigInteger(),
            nullable=True,
            comment="orderId of the order placed at the trigger (ALGO_UPDATE 'ai')",
        ),
        sa.Column("executed_qty", sa.Float(precision=53), server_default="0", nullable=False),
        sa.Column("avg_price", sa.Float(precision=53), nullable=True),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.Column("trade_group_id", sa.Text(), nullable=True),
        sa.Column("engine", sa.Text(), nullable=True),
        sa.Column("created_at", storage.types.EpochMs(), nullable=False),
        sa.Column("updated_at", storage.types.EpochMs(), nullable=False),
        sa.Column("triggered_at", storage.types.EpochMs(), nullable=True),
        sa.Column("raw_json", _JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["symbol"], ["instruments.symbol"], name=op.f("fk_algo_orders_symbol_instruments")
        ),
        sa.PrimaryKeyConstraint("symbol", "algo_id", name=op.f("pk_algo_orders")),
    )
    with op.batch_alter_table("algo_orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_algo_orders_symbol_status"), ["symbol", "status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_algo_orders_symbol_client_algo_id"), ["symbol", "client_algo_id"], unique=False
        )

    op.create_table(
        "sync_cursors",
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("last_trade_id", sa.BigInteger(), nullable=False),
        sa.Column("last_trade_ms", storage.types.EpochMs(), nullable=False),
        sa.Column("updated_at", storage.types.EpochMs(), nullable=False),
        sa.ForeignKeyConstraint(
            ["symbol"], ["instruments.symbol"], name=op.f("fk_sync_cursors_symbol_instruments")
        ),
        sa.PrimaryKeyConstraint("symbol", name=op.f("pk_sync_cursors")),
    )

    op.create_table(
        "income",
        sa.Column(
            "income_type", sa.Text(), nullable=False, comment="FUNDING_FEE, REALIZED_PNL, COMMISSION, …"
        ),
        sa.Column("tran_id", sa.BigInteger(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), server_default="", nullable=False),
        sa.Column("amount", sa.Float(precision=53), nullable=False),
        sa.Column("ts", storage.types.EpochMs(), nullable=False),
        sa.Column("trade_id", sa.BigInteger(), nullable=True),
        sa.Column("info", sa.Text(), nullable=True),
        sa.Column("raw_json", _JSON, nullable=True),
        sa.PrimaryKeyConstraint("income_type", "tran_id", "asset", "symbol", name=op.f("pk_income")),
    )
    with op.batch_alter_table("income", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_income_symbol_ts"), ["symbol", "ts"], unique=False)

    with op.batch_alter_table("fills", schema=None) as batch_op:
        batch_op.add_column(sa.Column("is_maker", sa.Boolean(), nullable=True))

    with op.batch_alter_table("engine_signals", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "client_order_id",
                sa.Text(),
                nullable=True,
                comment="the order the signal led to (spec 004 §3 A maps it back)",
            )
        )
        batch_op.create_index(
            batch_op.f("ix_engine_signals_symbol_client_order_id"),
            ["symbol", "client_order_id"],
            unique=False,
        )

    with _fills_set_aside(), op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.alter_column(
            "client_order_id",
            existing_type=sa.Text(),
            nullable=True,
            comment="unique only among open orders at the venue; NULL for an order known only from a REST trade",
        )
        batch_op.drop_constraint(batch_op.f("uq_orders_client_order_id"), type_="unique")
        batch_op.create_index(
            batch_op.f("ix_orders_symbol_client_order_id"), ["symbol", "client_order_id"], unique=False
        )


def downgrade() -> None:
    with _fills_set_aside(), op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_symbol_client_order_id"))
        batch_op.create_unique_constraint(batch_op.f("uq_orders_client_order_id"), ["client_order_id"])
        batch_op.alter_column("client_order_id", existing_type=sa.Text(), nullable=False, comment=None)

    with op.batch_alter_table("engine_signals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_engine_signals_symbol_client_order_id"))
        batch_op.drop_column("client_order_id")

    with op.batch_alter_table("fills", schema=None) as batch_op:
        batch_op.drop_column("is_maker")

    with op.batch_alter_table("income", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_income_symbol_ts"))
    op.drop_table("income")
    op.drop_table("sync_cursors")
    with op.batch_alter_table("algo_orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_algo_orders_symbol_client_algo_id"))
        batch_op.drop_index(batch_op.f("ix_algo_orders_symbol_status"))
    op.drop_table("algo_orders")


@contextmanager
def _fills_set_aside() -> Iterator[None]:
    """On SQLite, move ``fills`` rows to a temporary table while ``orders`` is rebuilt (dropping a
    table that ``fills`` references would check its foreign key), and put them back after."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("CREATE TEMP TABLE _fills_aside AS SELECT * FROM fills")
        op.execute("DELETE FROM fills")
    yield
    if sqlite:
        op.execute("INSERT INTO fills SELECT * FROM _fills_aside")
        op.execute("DROP TABLE _fills_aside")
