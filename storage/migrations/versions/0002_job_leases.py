"""job leases: attempts, lease_until and worker on training_jobs

A running job holds a lease that its worker renews by heartbeat; a job whose lease passed lost its
worker and goes back to the queue (``storage.jobs.recover_expired``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "attempts",
                sa.Integer(),
                server_default="0",
                nullable=False,
                comment="times claimed by a worker",
            )
        )
        batch_op.add_column(
            sa.Column(
                "lease_until",
                storage.types.EpochMs(),
                nullable=True,
                comment="a running job whose lease passed has lost its worker",
            )
        )
        batch_op.add_column(sa.Column("worker", sa.Text(), nullable=True, comment="who holds the lease"))


def downgrade() -> None:
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.drop_column("worker")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("attempts")
