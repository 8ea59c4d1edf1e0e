"""reviews: reviewers' labels for scans; who activated a version and its evaluation-split figures;
what a training run trained on and its promotion decision

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 06:00:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scan_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('withdrawn', sa.DateTime(timezone=True), nullable=True),
    sa.Column('withdrawn_by', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], name=op.f('fk_reviews_scan_id_scans'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_reviews_user_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['withdrawn_by'], ['users.id'], name=op.f('fk_reviews_withdrawn_by_users'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reviews'))
    )
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reviews_scan_id'), ['scan_id'], unique=False)
    # Nullable: versions and runs recorded before this revision have none of these.
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('activated_by', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('evaluation', _json(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_model_versions_activated_by_users'), 'users',
                                    ['activated_by'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('data_summary', _json(), nullable=True))
        batch_op.add_column(sa.Column('decision', _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_column('decision')
        batch_op.drop_column('data_summary')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_model_versions_activated_by_users'), type_='foreignkey')
        batch_op.drop_column('evaluation')
        batch_op.drop_column('activated_by')
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reviews_scan_id'))
    op.drop_table('reviews')
