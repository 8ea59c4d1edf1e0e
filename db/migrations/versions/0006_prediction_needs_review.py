"""predictions.needs_review: the review queue's flag on a scan's ensemble prediction

Set by the worker from the model version's triage rule (calibrated ensemble confidence below the
bundle's threshold, or too few models agreeing); null on the other models' rows, on rows written
before 0006 and on rows of a version whose bundle sets no rule.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 10:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('needs_review', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_column('needs_review')
