"""drift_metrics.features: each feature's PSI, status, effective samples, missing and outlier rate

The symbol's row kept only its worst PSI; the per-feature detail (which features drift, which had
too few samples to judge) is stored beside it as JSON, ``{name: {"psi", "status",
"effective_samples", "missing_rate", "outlier_rate"}}``. Null on rows written before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("drift_metrics", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "features",
                _JSON,
                nullable=True,
                comment='per feature: {"psi", "status", "effective_samples", "missing_rate", "outlier_rate"}',
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("drift_metrics", schema=None) as batch_op:
        batch_op.drop_column("features")
