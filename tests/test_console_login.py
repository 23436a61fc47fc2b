"""The console's login, sessions and CSRF through the real app: cookie flags, wrong passwords, throttling,
CSRF refusals, open redirects, logout, role home pages, security headers, and the session on /api/v1."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from support.api_kit import PASSWORD, add_console_users, ago, form_csrf, login, make_world

from cloud_receiver.admin import accounts
from cloud_receiver.storage.schema import login_attempts, sessions
from cloud_receiver.web.pages import PAGE_CSP
from cloud_receiver.web.sessions import SESSION_SETTINGS, SessionSettings
from cloud_receiver.web.throttle import LoginThrottle

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("cheap_hashes")]


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine, state={SESSION_SETTINGS: SessionSettings(login_limit=5)})
    add_console_users(w)
    w.add_alert("C1", started_at=ago(hours=3))  # A00001
    w.add_alert("C3", started_at=ago(hours=2))  # A00002: outside 640502
    yield w
    await w.close()


def _session_cookie(world) -> str | None:
    found = [c for c in world.client.session.cookie_jar if c.key == "bk_session"]
    return found[0].value if found else None


async def _csrf(world) -> str:
    return form_csrf(await (await world.client.get("/alerts")).text())


async def test_login_sets_a_safe_cookie_and_stores_only_its_digest(world):
    """A good login redirects to the role's home with an HttpOnly, SameSite=Lax cookie whose sha256 alone is stored."""
    r = await login(world.client, "reg1")
    assert r.status == 303 and r.headers["Location"] == "/alerts"
    morsel = r.cookies["bk_session"]
    assert morsel["httponly"] is True and morsel["samesite"] == "Lax" and morsel["path"] == "/"
    assert not morsel["secure"]  # plain http here; https sets Secure
    assert len(morsel.value) >= 43  # 32 random bytes, base64url
    rows = world.storage.sql.all(sa.select(sessions))
    assert [r["id_sha256"] for r in rows] == [hashlib.sha256(morsel.value.encode()).hexdigest()]
    assert morsel.value not in repr(rows)
    page = await world.client.get("/alerts")
    assert page.status == 200 and "李监管" in await page.text()


@pytest.mark.parametrize(("name", "password"), [("reg1", "wrong-password-1"), ("nobody", PASSWORD)])
async def test_wrong_password_or_name(world, name, password):
    """A wrong password and an unknown name get the same answer (401, no session), and are counted."""
    r = await login(world.client, name, password)
    assert r.status == 401
    assert "用户名或密码错误" in await r.text()
    assert _session_cookie(world) is None
    assert (await world.client.get("/alerts", allow_redirects=False)).status == 302
    kinds = world.storage.sql.all(sa.select(login_attempts.c.kind, login_attempts.c.key).order_by(login_attempts.c.kind))
    assert [k["kind"] for k in kinds] == ["ip", "name"] and kinds[1]["key"] == name


async def test_throttled_after_five_failures_per_name(world):
    """After 5 wrong passwords for a name, even the right one is refused with 429, saying when to retry."""
    for _ in range(5):
        assert (await login(world.client, "reg1", "wrong-password-x")).status == 401
    r = await login(world.client, "reg1")
    assert r.status == 429
    text = await r.text()
    assert "登录失败次数过多" in text and "分钟后) 再试" in text
    assert 0 < int(r.headers["Retry-After"]) <= 15 * 60 + 1
    assert _session_cookie(world) is None


async def test_throttled_after_five_failures_per_address(world):
    """5 failures from one address for different names lock that address out for every name."""
    for i in range(5):
        assert (await login(world.client, f"guess{i}", "wrong-password-x")).status == 401
    assert (await login(world.client, "admin1")).status == 429


async def test_throttle_holds_in_the_database_and_ends_with_the_window(world):
    """The count lives in login_attempts (shared by receivers); the lock ends when the window has passed."""
    t0 = datetime.now(UTC).replace(microsecond=0)  # SQLite keeps milliseconds
    throttle = LoginThrottle(world.storage.sql, limit=3, window_s=600)
    for i in range(3):
        throttle.record_failure("Li", f"10.0.0.{i}", now=t0 + timedelta(seconds=i))
    other = LoginThrottle(world.storage.sql, limit=3, window_s=600)  # another receiver
    assert other.retry_at("li", "10.9.9.9", now=t0 + timedelta(seconds=5)) == t0 + timedelta(seconds=600)
    assert other.retry_at("li", "10.9.9.9", now=t0 + timedelta(seconds=601)) is None
    assert other.retry_at("someone", "10.0.0.1", now=t0 + timedelta(seconds=5)) is None
    other.forget_name("LI")
    assert other.retry_at("li", "10.9.9.9", now=t0 + timedelta(seconds=5)) is None


async def test_success_forgets_the_names_failures(world):
    """A successful login clears its name's failures, so 4 + 4 mistakes around it are not a lockout."""
    for _ in range(4):
        assert (await login(world.client, "reg1", "wrong-password-x")).status == 401
    assert (await login(world.client, "reg1")).status == 303
    world.client.session.cookie_jar.clear()
    rows = world.storage.sql.all(sa.select(login_attempts.c.kind))
    assert {r["kind"] for r in rows} == {"ip"}


async def test_post_without_csrf_is_refused(world):
    """A form post without the session's CSRF token, or with a wrong one, gets a 403 page and changes nothing."""
    await login(world.client, "reg1")
    for data in ({}, {"csrf": "forged"}):
        r = await world.client.post("/logout", data=data, allow_redirects=False)
        assert r.status == 403 and "请求无效" in await r.text()
        assert r.headers["Content-Security-Policy"] == PAGE_CSP
    assert (await world.client.get("/alerts", allow_redirects=False)).status == 200  # still logged in
    r = await world.client.post("/schools", data={}, allow_redirects=False)
    assert r.status == 403


async def test_login_form_needs_its_own_token(world):
    """A login post without the login page's token (as another site's form would send) is refused."""
    r = await world.client.post("/login", data={"name": "reg1", "password": PASSWORD}, allow_redirects=False)
    assert r.status == 403
    assert _session_cookie(world) is None


@pytest.mark.parametrize("target", ["//evil.example/", "http://evil.example/", "https:evil.example", "/\\evil.example",
                                    "javascript:alert(1)", "/\t/evil.example", "evil.example", "/login", "/api/v1/alerts"])
async def test_open_redirects_are_refused(world, target):
    """`next` only leads to a path of this site; anything else lands on the role's home."""
    r = await login(world.client, "reg1", next_path=target)
    assert r.status == 303 and r.headers["Location"] == "/alerts"
    page = await world.client.get(f"/login?next={target}", allow_redirects=False)
    assert page.headers["Location"] == "/alerts"


async def test_next_returns_to_the_page_asked_for(world):
    """A page asked for without a session sends to the login, which comes back to it after."""
    r = await world.client.get("/schools?tab=2", allow_redirects=False)
    location = urlsplit(r.headers["Location"])
    assert r.status == 302 and location.path == "/login" and parse_qs(location.query) == {"next": ["/schools?tab=2"]}
    page = await world.client.get(r.headers["Location"])
    assert 'name="next" value="/schools?tab=2"' in await page.text()
    r = await login(world.client, "reg1", next_path="/schools?tab=2")
    assert r.headers["Location"] == "/schools?tab=2"


async def test_logout_ends_the_session(world):
    """Logout deletes the session row and the cookie; the old cookie value no longer opens anything."""
    await login(world.client, "reg1")
    old = _session_cookie(world)
    r = await world.client.post("/logout", data={"csrf": await _csrf(world)}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"
    assert r.cookies["bk_session"].value == ""
    assert world.storage.sql.all(sa.select(sessions)) == []
    r = await world.client.get("/alerts", cookies={"bk_session": old}, allow_redirects=False)
    assert r.status == 302 and r.headers["Location"].startswith("/login")
    r = await world.client.get("/api/v1/alerts", cookies={"bk_session": old})
    assert r.status == 401


@pytest.mark.parametrize(("name", "home", "allowed", "forbidden"), [
    ("admin1", "/admin", ["/alerts", "/schools", "/dashboard", "/admin"], []),
    ("reg1", "/alerts", ["/alerts", "/schools", "/dashboard"], ["/admin"]),
    ("kitchen1", "/alerts", ["/alerts", "/schools"], ["/dashboard", "/admin"]),
])
async def test_role_home_and_pages(world, name, home, allowed, forbidden):
    """/ leads to the role's home; each role's pages open, and the others show a 403 page."""
    assert (await world.client.get("/", allow_redirects=False)).headers["Location"] == "/login"
    r = await login(world.client, name)
    assert r.headers["Location"] == home
    assert (await world.client.get("/", allow_redirects=False)).headers["Location"] == home
    for path in allowed:
        r = await world.client.get(path)
        assert r.status == 200 and "退出" in await r.text(), path  # the page, in the logged-in layout
    for path in forbidden:
        r = await world.client.get(path)
        assert r.status == 403 and "无权访问" in await r.text(), path


async def test_pages_send_strict_headers(world):
    """The login page, a page and error pages carry the strict CSP, nosniff and same-origin referrers."""
    responses = [await world.client.get("/login")]
    await login(world.client, "kitchen1")
    responses += [await world.client.get("/alerts"), await world.client.get("/admin"),
                  await world.client.get("/logout")]
    assert [r.status for r in responses] == [200, 200, 403, 405]
    for r in responses:
        assert r.headers["Content-Security-Policy"] == PAGE_CSP
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "same-origin"
        assert r.headers["Cache-Control"] == "no-store"
        assert "<script>" not in await r.text() and " style=" not in await r.text()
    missing = await world.client.get("/no-such-page")  # not a page: aiohttp's 404 with the API's CSP
    assert missing.status == 404 and "default-src 'none'" in missing.headers["Content-Security-Policy"]


async def test_static_files(world):
    """Static files come with nosniff and their type; a versioned URL is cached for a year; no escaping the folder."""
    page = await (await world.client.get("/login")).text()
    css_url = page.split('href="', 3)[2].split('"')[0]
    assert css_url.startswith("/static/console.css?v=")
    r = await world.client.get(css_url)
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/css")
    assert r.headers["X-Content-Type-Options"] == "nosniff" and "immutable" in r.headers["Cache-Control"]
    r = await world.client.get("/static/console.js")
    assert r.headers["Content-Type"].startswith("text/javascript") and "immutable" not in r.headers["Cache-Control"]
    for path in ("/static/../sessions.py", "/static/__init__.py", "/static/%2e%2e/pages.py"):
        assert (await world.client.get(path)).status == 404, path


async def test_unauthenticated_pages_leak_nothing(world):
    """Without a session (or with a forged cookie) a page redirects to the login and shows no data."""
    for cookies in ({}, {"bk_session": "forged-session-id"}):
        r = await world.client.get("/alerts", cookies=cookies, allow_redirects=False)
        assert r.status == 302
        body = await r.text()
        assert "A00001" not in body and "李监管" not in body


async def test_session_cookie_on_the_api(world):
    """The console's cookie reads /api/v1 within the user's scope; a write needs the session's X-CSRF-Token."""
    await login(world.client, "reg1")
    r = await world.client.get("/api/v1/alerts")
    assert r.status == 200
    assert [a["id"] for a in (await r.json())["items"]] == ["A00001"]  # C3 is outside 640502
    deadline = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    r = await world.client.post("/api/v1/alerts/A00001/deadline", json={"deadline": deadline})
    assert r.status == 403 and (await r.json())["error"]["code"] == "csrf_required"
    r = await world.client.post("/api/v1/alerts/A00001/deadline", json={"deadline": deadline},
                                headers={"X-CSRF-Token": "forged"})
    assert r.status == 403
    r = await world.client.post("/api/v1/alerts/A00001/deadline", json={"deadline": deadline},
                                headers={"X-CSRF-Token": await _csrf(world)})
    assert r.status == 200, await r.text()
    assert (await r.json())["transitions"][-1]["actor"] == "reg1"


async def test_disabled_user_is_logged_out_everywhere(world):
    """Disabling an account ends its browser session on pages and on the API at once."""
    await login(world.client, "reg1")
    assert (await world.client.get("/api/v1/alerts")).status == 200
    accounts.disable_user(world.storage.sql, "reg1")
    assert (await world.client.get("/api/v1/alerts")).status == 401
    r = await world.client.get("/alerts", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"].startswith("/login")
    assert (await login(world.client, "reg1")).status == 401
