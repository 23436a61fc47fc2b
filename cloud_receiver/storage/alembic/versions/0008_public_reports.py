"""The public page's 投诉/举报 form: accepted reports (rate limit, single-use forms) and shared site keys.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite')
RowId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('public_reports',
    sa.Column('id', RowId, sa.Identity(always=False), nullable=False),
    sa.Column('client', sa.Text(), nullable=False),
    sa.Column('canteen_id', sa.Text(), nullable=False),
    sa.Column('form_sha256', sa.Text(), nullable=False),
    sa.Column('at', Timestamp, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('form_sha256', name='public_reports_form'),
    )
    op.create_index('public_reports_client', 'public_reports', ['client', 'at'], unique=False)
    op.create_index('public_reports_at', 'public_reports', ['at'], unique=False)
    op.create_table('site_keys',
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('secret', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', Timestamp, nullable=False),
    sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('site_keys')
    op.drop_index('public_reports_at', table_name='public_reports')
    op.drop_index('public_reports_client', table_name='public_reports')
    op.drop_table('public_reports')
