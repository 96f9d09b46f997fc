"""Datasets are keyed by their balance too: a weighted split of a snapshot is recorded beside the undersampled one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("balance", sa.String(length=16), nullable=False, server_default="undersample"))
        batch.drop_constraint("uq_datasets_snapshot_id_seed", type_="unique")
        batch.create_unique_constraint("uq_datasets_snapshot_id_seed_balance", ["snapshot_id", "seed", "balance"])


def downgrade() -> None:
    op.execute("DELETE FROM datasets WHERE balance <> 'undersample'")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_constraint("uq_datasets_snapshot_id_seed_balance", type_="unique")
        batch.create_unique_constraint("uq_datasets_snapshot_id_seed", ["snapshot_id", "seed"])
        batch.drop_column("balance")
