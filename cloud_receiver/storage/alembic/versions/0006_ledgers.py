"""The canteen ledgers (自律): suppliers, purchases, staff, morning checks, disinfection, waste, samples, gatherings, additives, photos.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite')
RowId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
Data = sa.JSON().with_variant(JSONB(), 'postgresql')
KINDS = ("suppliers", "purchases", "staff", "morning_checks", "disinfection", "waste", "samples", "gatherings",
         "additives", "photos")


def upgrade() -> None:
    op.create_table('ledger_records',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('entry_id', sa.Text(), nullable=False),
    sa.Column('canteen_id', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), sa.CheckConstraint("kind IN ('" + "', '".join(KINDS) + "')",
                                                    name='ledger_records_kind'), nullable=False),
    sa.Column('day', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('data', Data, nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('supersedes', sa.Text(), nullable=True),
    sa.Column('is_current', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.Column('created_by', sa.Text(), nullable=False),
    sa.Column('created_role', sa.Text(), nullable=False),
    sa.Column('created_at', Timestamp, nullable=False),
    sa.Column('edited_by', sa.Text(), nullable=True),
    sa.Column('edited_at', Timestamp, nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('canteen_id', 'entry_id', 'revision', name='ledger_records_entry_revision'),
    )
    op.create_index('ledger_records_day', 'ledger_records', ['canteen_id', 'kind', 'day'], unique=False)
    op.create_index('ledger_records_subject', 'ledger_records', ['canteen_id', 'kind', 'subject'], unique=False)
    op.create_table('ledger_photos',
    sa.Column('canteen_id', sa.Text(), nullable=False),
    sa.Column('sha256', sa.Text(), nullable=False),
    sa.Column('uploaded_by', sa.Text(), nullable=False),
    sa.Column('uploaded_at', Timestamp, nullable=False),
    sa.PrimaryKeyConstraint('canteen_id', 'sha256'),
    )
    op.create_index('ledger_photos_sha', 'ledger_photos', ['sha256'], unique=False)
    op.create_table('ledger_comments',
    sa.Column('id', RowId, sa.Identity(always=False), nullable=False),
    sa.Column('canteen_id', sa.Text(), nullable=False),
    sa.Column('entry_id', sa.Text(), nullable=False),
    sa.Column('author', sa.Text(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('at', Timestamp, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ledger_comments_entry', 'ledger_comments', ['canteen_id', 'entry_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ledger_comments_entry', table_name='ledger_comments')
    op.drop_table('ledger_comments')
    op.drop_index('ledger_photos_sha', table_name='ledger_photos')
    op.drop_table('ledger_photos')
    op.drop_index('ledger_records_subject', table_name='ledger_records')
    op.drop_index('ledger_records_day', table_name='ledger_records')
    op.drop_table('ledger_records')
