"""scans.sent_sha256: the SHA-256 of a file as the client sent it, when it differs from the stored one

A DICOM file is de-identified before it is stored, so its stored content (scans.sha256)
differs from the bytes the client holds. Clients that resume an upload compare their
files' hashes with GET /api/v1/jobs/<id>/files, which needs the hash as sent.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 09:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: null means the file was stored as sent (every non-DICOM file, and every scan before 0005).
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sent_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.drop_column('sent_sha256')
