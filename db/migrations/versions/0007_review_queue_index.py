"""A partial index for the review queue: ensemble rows with needs_review true

`GET /api/v1/results?needs_review=true` (and the job page's count) look for the few ensemble rows
the triage rule flagged; without it PostgreSQL scans every ensemble row of the table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 12:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_WHERE = sa.text("model_name = 'ensemble' AND needs_review IS true")


def upgrade() -> None:
    op.create_index('ix_predictions_review_queue', 'predictions', ['scan_id', 'model_version_id'],
                    postgresql_where=_WHERE, sqlite_where=_WHERE)


def downgrade() -> None:
    op.drop_index('ix_predictions_review_queue', table_name='predictions')
