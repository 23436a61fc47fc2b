"""Console accounts: argon2 hashing, the password policy, role and scope validation, disabling and
password changes ending sessions, and the `cloud-receiver user …` commands (password from the environment)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from support.requirements import pg_schema

from cloud_receiver.admin import accounts
from cloud_receiver.admin.accounts import AccountError
from cloud_receiver.app.cli import main
from cloud_receiver.app.factory import open_configured_storage
from cloud_receiver.config import load_config
from cloud_receiver.storage.db import Db
from cloud_receiver.storage.schema import sessions, users
from cloud_receiver.web.sessions import SessionSettings, find_session, open_session

pytestmark = pytest.mark.unit

PASSWORD = "correct-horse-battery"
SETTINGS = SessionSettings()


@dataclass
class Receiver:
    config: Path
    db: Db


@pytest.fixture
def receiver(tmp_path: Path, db_engine: str) -> Iterator[Receiver]:
    """A receiver config on a fresh database of the engine (with canteen C1), and that database."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_schema("bk_accounts")) if db_engine == "postgresql" else None
        storage_lines = f"  url: '{url}'\n" if url else f"  path: {tmp_path / 'receiver.db'}\n"
        config = tmp_path / "receiver.yaml"
        config.write_text(f"storage:\n{storage_lines}  media_dir: {tmp_path / 'media'}\n", encoding="utf-8")
        storage = open_configured_storage(load_config(config))
        stack.callback(storage.close)
        storage.add_canteen("C1", "第一中学食堂", "64050201")
        yield Receiver(config, storage.sql)


def test_password_policy_speaks_chinese() -> None:
    """A password under 10 characters is refused with a Chinese message naming the minimum."""
    with pytest.raises(AccountError, match="密码太短: 至少 10 个字符"):
        accounts.hash_password("short-9ch")
    with pytest.raises(AccountError, match="密码太长"):
        accounts.hash_password("x" * (accounts.MAX_PASSWORD_CHARS + 1))
    assert accounts.hash_password("a" * 10).startswith("$argon2id$")


def test_hash_verifies_only_its_password() -> None:
    """The argon2id hash accepts its own password, not another, and a damaged hash is a plain False."""
    stored = accounts.hash_password(PASSWORD)
    assert PASSWORD not in stored
    assert accounts.verify_password(stored, PASSWORD)
    assert not accounts.verify_password(stored, PASSWORD + "x")
    assert not accounts.verify_password("not-a-hash", PASSWORD)
    assert not accounts.needs_rehash(stored)


def test_outdated_hash_is_replaced_at_login(receiver: Receiver) -> None:
    """A hash made with weaker parameters verifies, and the login stores one with today's parameters."""
    accounts.create_user(receiver.db, "old-hash", "admin", "", PASSWORD)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with receiver.db.write() as conn:
        conn.execute(users.update().where(users.c.name == "old-hash").values(password_hash=weak))
    assert accounts.needs_rehash(weak)
    assert accounts.authenticate(receiver.db, "old-hash", PASSWORD) is not None
    stored = receiver.db.scalar(sa.select(users.c.password_hash).where(users.c.name == "old-hash"))
    assert stored != weak and not accounts.needs_rehash(stored)
    assert accounts.authenticate(receiver.db, "old-hash", PASSWORD) is not None


@pytest.mark.parametrize(("name", "role", "scope", "message"), [
    ("reg", "regulator", "64x", "角色或范围无效"),
    ("reg", "root", "", "角色或范围无效"),
    ("kitchen", "canteen", "C9", "食堂 'C9' 不存在"),
    ("bad name", "admin", "", "用户名 'bad name' 无效"),
    ("", "admin", "", "用户名 '' 无效"),
])
def test_create_user_validates_role_and_scope(receiver: Receiver, name: str, role: str, scope: str,
                                              message: str) -> None:
    """A bad role, a malformed scope, an unknown canteen and a bad login name are refused, saying which."""
    with pytest.raises(AccountError, match=message):
        accounts.create_user(receiver.db, name, role, scope, PASSWORD)
    assert receiver.db.scalar(sa.select(sa.func.count()).select_from(users)) == 0


def test_create_user_refuses_a_taken_name(receiver: Receiver) -> None:
    """Two accounts cannot share a login name; the first keeps its role."""
    first = accounts.create_user(receiver.db, "li", "regulator", "640502", PASSWORD, "李监管")
    assert (first.role, first.scope, first.shown_name) == ("regulator", "640502", "李监管")
    with pytest.raises(AccountError, match="已存在"):
        accounts.create_user(receiver.db, "li", "admin", "", PASSWORD)
    assert [u["role"] for u in accounts.list_users(receiver.db)] == ["regulator"]


def test_authenticate(receiver: Receiver) -> None:
    """The right name and password give the user and its principal; a wrong one or an unknown name give None."""
    accounts.create_user(receiver.db, "kitchen", "canteen", "C1", PASSWORD)
    user = accounts.authenticate(receiver.db, "kitchen", PASSWORD)
    assert user is not None and user.principal.can_see("C1", "64050201") and not user.principal.can_see("C2", "64050201")
    assert user.principal.name == "kitchen"
    assert accounts.authenticate(receiver.db, "kitchen", PASSWORD.upper()) is None
    assert accounts.authenticate(receiver.db, "nobody", PASSWORD) is None


def test_disabled_user_session_dies(receiver: Receiver) -> None:
    """Disabling an account ends its open sessions at once, and it can no longer log in."""
    user = accounts.create_user(receiver.db, "li", "regulator", "640502", PASSWORD)
    session_id, _ = open_session(receiver.db, user, SETTINGS)
    assert find_session(receiver.db, session_id, SETTINGS) is not None
    assert accounts.disable_user(receiver.db, "li") == 1
    assert find_session(receiver.db, session_id, SETTINGS) is None
    assert receiver.db.scalar(sa.select(sa.func.count()).select_from(sessions)) == 0
    assert accounts.authenticate(receiver.db, "li", PASSWORD) is None
    with pytest.raises(AccountError, match="没有用户"):
        accounts.disable_user(receiver.db, "nobody")


def test_set_password_ends_sessions(receiver: Receiver) -> None:
    """A new password ends the account's sessions; the old password stops working, the new one works."""
    user = accounts.create_user(receiver.db, "li", "regulator", "640502", PASSWORD)
    session_id, _ = open_session(receiver.db, user, SETTINGS)
    with pytest.raises(AccountError, match="密码太短"):
        accounts.set_password(receiver.db, "li", "short")
    assert find_session(receiver.db, session_id, SETTINGS) is not None  # a refused change ends nothing
    assert accounts.set_password(receiver.db, "li", "a-new-long-password") == 1
    assert find_session(receiver.db, session_id, SETTINGS) is None
    assert accounts.authenticate(receiver.db, "li", PASSWORD) is None
    assert accounts.authenticate(receiver.db, "li", "a-new-long-password") is not None


def test_session_idle_and_absolute_timeouts(receiver: Receiver) -> None:
    """A session ends after the idle time without use, and at its absolute end however much it is used."""
    settings = SessionSettings(idle_s=3600, absolute_s=3 * 3600, touch_s=60)
    user = accounts.create_user(receiver.db, "li", "regulator", "640502", PASSWORD)
    t0 = datetime.now(UTC)
    idle_id, _ = open_session(receiver.db, user, settings, now=t0)
    assert find_session(receiver.db, idle_id, settings, now=t0 + timedelta(minutes=59)) is not None  # touched
    assert find_session(receiver.db, idle_id, settings, now=t0 + timedelta(minutes=118)) is not None
    assert find_session(receiver.db, idle_id, settings, now=t0 + timedelta(minutes=179)) is None  # idle 61 min
    busy_id, _ = open_session(receiver.db, user, settings, now=t0)
    for minutes in range(30, 180, 30):
        assert find_session(receiver.db, busy_id, settings, now=t0 + timedelta(minutes=minutes)) is not None
    assert find_session(receiver.db, busy_id, settings, now=t0 + timedelta(minutes=181)) is None


def test_cli_user_commands(receiver: Receiver, monkeypatch, capsys) -> None:
    """add / list / passwd / disable through `cloud-receiver`; the password comes from the environment and is
    printed nowhere, and a disabled user's session dies."""
    cfg = str(receiver.config)
    monkeypatch.setenv("BK_TEST_USER_PW", PASSWORD)
    assert main(["-c", cfg, "user", "add", "--name", "li", "--role", "regulator", "--scope", "640502",
                 "--password-env", "BK_TEST_USER_PW", "--display-name", "李监管"]) == 0
    assert main(["-c", cfg, "user", "add", "--name", "kitchen", "--role", "canteen", "--scope", "C1",
                 "--password-env", "BK_TEST_USER_PW"]) == 0
    assert main(["-c", cfg, "user", "list"]) == 0
    out = capsys.readouterr()
    assert "用户已创建: li (regulator 640502)" in out.out
    assert "li\tregulator\t640502\t启用\t李监管" in out.out and "kitchen\tcanteen\tC1\t启用" in out.out
    assert PASSWORD not in out.out + out.err

    user = accounts.authenticate(receiver.db, "li", PASSWORD)
    assert user is not None
    session_id, _ = open_session(receiver.db, user, SETTINGS)
    monkeypatch.setenv("BK_TEST_NEW_PW", "another-long-password")
    assert main(["-c", cfg, "user", "passwd", "--name", "li", "--password-env", "BK_TEST_NEW_PW"]) == 0
    assert "密码已更新: li, 结束了 1 个会话" in capsys.readouterr().out
    assert find_session(receiver.db, session_id, SETTINGS) is None
    assert accounts.authenticate(receiver.db, "li", "another-long-password") is not None

    session_id, _ = open_session(receiver.db, user, SETTINGS)
    assert main(["-c", cfg, "user", "disable", "--name", "li"]) == 0
    assert "用户已停用: li, 结束了 1 个会话" in capsys.readouterr().out
    assert find_session(receiver.db, session_id, SETTINGS) is None
    assert main(["-c", cfg, "user", "list"]) == 0
    assert "li\tregulator\t640502\t已停用" in capsys.readouterr().out


def test_cli_refusals(receiver: Receiver, monkeypatch, capsys) -> None:
    """A missing environment variable, a short password, an unknown canteen or user: exit 1 with a Chinese reason."""
    cfg = str(receiver.config)
    monkeypatch.delenv("BK_TEST_UNSET_PW", raising=False)
    assert main(["-c", cfg, "user", "add", "--name", "li", "--role", "admin", "--password-env", "BK_TEST_UNSET_PW"]) == 1
    assert "环境变量 BK_TEST_UNSET_PW 未设置" in capsys.readouterr().err
    monkeypatch.setenv("BK_TEST_SHORT_PW", "short")
    assert main(["-c", cfg, "user", "add", "--name", "li", "--role", "admin", "--password-env", "BK_TEST_SHORT_PW"]) == 1
    err = capsys.readouterr().err
    assert "密码太短" in err and "short" not in err
    monkeypatch.setenv("BK_TEST_USER_PW", PASSWORD)
    assert main(["-c", cfg, "user", "add", "--name", "k", "--role", "canteen", "--scope", "C9",
                 "--password-env", "BK_TEST_USER_PW"]) == 1
    assert "食堂 'C9' 不存在" in capsys.readouterr().err
    assert main(["-c", cfg, "user", "disable", "--name", "nobody"]) == 1
    assert main(["-c", cfg, "user", "passwd", "--name", "nobody", "--password-env", "BK_TEST_USER_PW"]) == 1
    assert capsys.readouterr().err.count("没有用户 'nobody'") == 2
    assert accounts.list_users(receiver.db) == []


@pytest.mark.parametrize("argv", [["user", "add", "--name", "li", "--role", "admin", "--password", PASSWORD],
                                  ["user", "passwd", "--name", "li", "--password", PASSWORD]])
def test_password_is_not_an_argument(argv: list[str]) -> None:
    """No option takes the password itself, not even as an abbreviation of --password-env."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
