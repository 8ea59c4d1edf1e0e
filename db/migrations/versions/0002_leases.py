"""leases: scans and training runs record when they were sent and which worker holds them

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 05:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('lease_owner', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_scans_status_dispatched', ['status', 'dispatched_at'], unique=False)
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
    # Work queued before this revision was sent by the old code: mark it sent, so the
    # sweeper treats it like any other queued work instead of sending it all at once.
    op.execute("UPDATE scans SET dispatched_at = created WHERE status = 'queued'")
    op.execute("UPDATE training_runs SET dispatched_at = created WHERE status IN ('queued', 'running')")


def downgrade() -> None:
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_column('lease_until')
        batch_op.drop_column('dispatched_at')
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.drop_index('ix_scans_status_dispatched')
        batch_op.drop_column('lease_until')
        batch_op.drop_column('lease_owner')
        batch_op.drop_column('dispatched_at')
