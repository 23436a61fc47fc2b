"""People's accounts and console sessions (the web console).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite')
RowId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
ROLES = "role IN ('admin', 'regulator', 'canteen')"


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', RowId, sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('role', sa.Text(), sa.CheckConstraint(ROLES, name='users_role'), nullable=False),
    sa.Column('scope', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('display_name', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('disabled_at', Timestamp, nullable=True),
    sa.Column('created_at', Timestamp, nullable=False),
    sa.Column('password_changed_at', Timestamp, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', name='users_name'),
    )
    op.create_table('sessions',
    sa.Column('id_sha256', sa.Text(), nullable=False),
    sa.Column('user_id', RowId, nullable=False),
    sa.Column('csrf_token', sa.Text(), nullable=False),
    sa.Column('created_at', Timestamp, nullable=False),
    sa.Column('last_seen', Timestamp, nullable=False),
    sa.Column('expires_at', Timestamp, nullable=False),
    sa.PrimaryKeyConstraint('id_sha256'),
    )
    op.create_index('sessions_user', 'sessions', ['user_id'], unique=False)
    op.create_table('login_attempts',
    sa.Column('id', RowId, sa.Identity(always=False), nullable=False),
    sa.Column('kind', sa.Text(), sa.CheckConstraint("kind IN ('name', 'ip')", name='login_attempts_kind'),
              nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('at', Timestamp, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('login_attempts_key', 'login_attempts', ['kind', 'key', 'at'], unique=False)
    op.create_index('login_attempts_at', 'login_attempts', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index('login_attempts_at', table_name='login_attempts')
    op.drop_index('login_attempts_key', table_name='login_attempts')
    op.drop_table('login_attempts')
    op.drop_index('sessions_user', table_name='sessions')
    op.drop_table('sessions')
    op.drop_table('users')
