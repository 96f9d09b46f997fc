"""Initial schema: snapshots, datasets, drift reports.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NO_BASELINE = sa.text("baseline_id IS NULL")


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("content_hash", sa.String(length=128), nullable=False),
        sa.Column("movies", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("posters", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("manifest_uri", sa.String(length=2048), nullable=False),
        sa.Column("genre_counts_raw", sa.JSON(), nullable=False),
        sa.Column("genre_counts_collapsed", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
    )
    op.create_index(op.f("ix_snapshots_created_at"), "snapshots", ["created_at"])

    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("snapshot_id", sa.String(length=64), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=128), nullable=False),
        sa.Column("uri", sa.String(length=2048), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"], ["snapshots.id"], name=op.f("fk_datasets_snapshot_id_snapshots")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("snapshot_id", "seed", name=op.f("uq_datasets_snapshot_id_seed")),
    )

    op.create_table(
        "drift_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("snapshot_id", sa.String(length=64), nullable=False),
        sa.Column("baseline_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("js_raw", sa.Float(), nullable=True),
        sa.Column("js_collapsed", sa.Float(), nullable=True),
        sa.Column("psi_raw", sa.Float(), nullable=True),
        sa.Column("psi_collapsed", sa.Float(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("report_uri", sa.String(length=2048), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('previous', 'champion')", name=op.f("ck_drift_reports_kind")),
        sa.ForeignKeyConstraint(
            ["snapshot_id"], ["snapshots.id"], name=op.f("fk_drift_reports_snapshot_id_snapshots")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_reports")),
        sa.UniqueConstraint(
            "snapshot_id", "baseline_id", "kind", name=op.f("uq_drift_reports_snapshot_id_baseline_id_kind")
        ),
    )
    # NULLs are distinct in unique constraints: a partial index keeps one no-baseline report per kind.
    op.create_index(
        "uq_drift_reports_snapshot_id_kind_no_baseline",
        "drift_reports",
        ["snapshot_id", "kind"],
        unique=True,
        sqlite_where=NO_BASELINE,
        postgresql_where=NO_BASELINE,
    )


def downgrade() -> None:
    op.drop_table("drift_reports")
    op.drop_table("datasets")
    op.drop_table("snapshots")
