"""Browser tests of the web console: Playwright's **sync** API driving Debian's Chromium.

Why sync: a test reads top to bottom like a user's session (open, wait, look), with no event loop in
the test's thread. What the browser talks to must therefore run elsewhere: `serve_app` runs an aiohttp
app on 127.0.0.1 (free port) in a background thread with its own loop.

The browser is Debian's `/usr/bin/chromium` (apt package `chromium`, with `fonts-noto-cjk` for
Chinese text; scripts/setup.sh installs both). Playwright never downloads a browser of its own here:
never run `playwright install`. `require_chromium()` fails the test (no skip) when either is missing.

    require_chromium()
    with chromium_browser() as browser, serve_app(app) as base_url:
        with open_page(browser, "phone") as (page, log):
            page.goto(base_url + "/")
            screenshot(page, "home-phone", tmp_path)
            log.assert_clean()

`log_in` goes through the console's login form as a person does; `CSP_WATCH` (an init script) records
what the page's Content-Security-Policy blocked, for `csp_violations`.

Every page is opened in a fresh context at a named viewport (`VIEWPORTS`), zh-CN locale and the
Asia/Shanghai timezone. Its `PageLog` collects console errors (and uncaught exceptions), failed
requests (network failures and HTTP >= 400), and requests to any host but 127.0.0.1/localhost, which
are aborted before they leave the machine: the console must work offline, with vendored assets only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from aiohttp import web

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, Route

CHROMIUM = Path("/usr/bin/chromium")
CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")  # without it Chinese shows as boxes
LOCALE = "zh-CN"
TIMEZONE = "Asia/Shanghai"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
SCREENSHOTS_ENV = "BK_SCREENSHOTS"
SERVER_START_TIMEOUT_S = 30.0
# recorded before any page script runs (Playwright's init scripts are not subject to the page's CSP)
CSP_WATCH = ("window.__cspViolations = [];"
             "document.addEventListener('securitypolicyviolation',"
             " e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));")


@dataclass(frozen=True)
class Viewport:
    """A screen the console must work on: CSS pixels, touch/mobile emulation and pixel density."""

    width: int
    height: int
    is_mobile: bool = False
    device_scale_factor: float = 1.0


VIEWPORTS: dict[str, Viewport] = {
    "desktop": Viewport(1366, 900),
    "phone": Viewport(390, 844, is_mobile=True, device_scale_factor=2.0),
}


def require_chromium() -> None:
    """Fail (never skip) naming what to install when Chromium, its CJK font or Playwright is missing."""
    missing = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if not CJK_FONT.is_file():
        missing.append(f"{CJK_FONT} (apt-get install fonts-noto-cjk)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright Python package (pip install -e '.[test]'; no `playwright install`)")
    if missing:
        pytest.fail("browser tests need " + " and ".join(missing) + "; scripts/setup.sh installs them")


@dataclass
class PageLog:
    """What went wrong while a page was open; `assert_clean` fails listing all of it."""

    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)  # GETs the browser itself gave up (not problems)

    def on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            where = msg.location
            self.console_errors.append(f"{msg.text} ({where.get('url')}:{where.get('lineNumber')})")

    def on_page_error(self, err: Exception) -> None:
        self.console_errors.append(f"uncaught: {err}")

    def on_request_failed(self, request: Request) -> None:
        if request.method == "GET" and request.failure == "net::ERR_ABORTED":
            # the browser gave it up, the server did not fail it: a page left while its scripts or event stream
            # still loaded, a video switching to range requests. A missing file is an HTTP error (below), a
            # server that breaks the connection another net:: error
            self.aborted.append(request.url)
            return
        self.failed_requests.append(f"{request.method} {request.url}: {request.failure}")

    def on_response(self, response: Response) -> None:
        if response.status >= 400:
            self.failed_requests.append(f"{response.request.method} {response.url}: HTTP {response.status}")

    def on_route(self, route: Route) -> None:
        """Let requests to this machine through; abort and record any other."""
        url = route.request.url
        if urlsplit(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.external_requests.append(url)
            route.abort("blockedbyclient")

    def problems(self) -> list[str]:
        return ([f"console error: {e}" for e in self.console_errors]
                + [f"failed request: {r}" for r in self.failed_requests]
                + [f"request off this machine (aborted): {u}" for u in self.external_requests])

    def assert_clean(self) -> None:
        problems = self.problems()
        assert not problems, "the page had problems:\n  " + "\n  ".join(problems)

    def assert_offline(self) -> None:
        """No request went to a host other than 127.0.0.1/localhost."""
        assert not self.external_requests, f"requests off this machine (aborted): {self.external_requests}"


@contextmanager
def chromium_browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; `--no-sandbox` only as root, where Chromium refuses to start without it."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def open_page(browser: Browser, viewport: str = "desktop") -> Iterator[tuple[Page, PageLog]]:
    """A page in a fresh context at `VIEWPORTS[viewport]`, zh-CN, Asia/Shanghai, with its `PageLog`."""
    size = VIEWPORTS[viewport]
    context = browser.new_context(
        viewport={"width": size.width, "height": size.height}, is_mobile=size.is_mobile, has_touch=size.is_mobile,
        device_scale_factor=size.device_scale_factor, locale=LOCALE, timezone_id=TIMEZONE,
        service_workers="block",  # a service worker's fetches would bypass the route below
    )
    log = PageLog()
    try:
        context.route("**/*", log.on_route)
        page = context.new_page()
        page.on("console", log.on_console)
        page.on("pageerror", log.on_page_error)
        page.on("requestfailed", log.on_request_failed)
        page.on("response", log.on_response)
        yield page, log
    finally:
        context.close()


def csp_violations(page: Page) -> list[str]:
    """What the page's CSP blocked since `page.add_init_script(CSP_WATCH)` (directive and URL each)."""
    return page.evaluate("window.__cspViolations")


def assert_fits(page: Page) -> None:
    """Nothing sticks out sideways (on a phone, innerWidth grows with the content: compare with the screen)."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{page.url} is wider than the screen: {width}"


def submit_login(page: Page, name: str, password: str) -> None:
    """Fill in the console's login form, as a person does (by its labels), and press 登录."""
    page.get_by_label("用户名").fill(name)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()


def log_in(page: Page, base_url: str, name: str, password: str, next_path: str | None = None, *,
           lands_on: str | None = None) -> None:
    """Open /login?next=`next_path`, log in through the form and wait for `lands_on` (a path; default `next_path`)."""
    page.goto(base_url + "/login" + (f"?next={next_path}" if next_path else ""))
    submit_login(page, name, password)
    page.wait_for_url(base_url + (lands_on or next_path or "/"))


def screenshot_dir(default: Path) -> Path:
    """$BK_SCREENSHOTS when set (to keep them after the run), else `default` (e.g. pytest's tmp_path)."""
    return Path(os.environ.get(SCREENSHOTS_ENV) or default)


def screenshot(page: Page, name: str, default_dir: Path) -> Path:
    """Save the whole page as `<dir>/<name>.png` (dir from `screenshot_dir`) and return its path."""
    out = screenshot_dir(default_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def distinct_colours(png: Path) -> int:
    """How many RGB colours the image has: a blank page has one, a chart with text hundreds."""
    from PIL import Image

    with Image.open(png) as img:
        rgb = img.convert("RGB")
        return len(rgb.getcolors(maxcolors=rgb.width * rgb.height) or [])


@contextmanager
def serve_app(app: web.Application, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` on a free port of `host` from a background thread (own loop); yield its base URL."""
    ready = threading.Event()
    handle: list[tuple[asyncio.AbstractEventLoop, asyncio.Event, str]] = []
    failed: list[BaseException] = []

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, 0).start()
            port = runner.addresses[0][1]
            handle.append((asyncio.get_running_loop(), asyncio.Event(), f"http://{host}:{port}"))
            ready.set()
            await handle[0][1].wait()
        finally:
            await runner.cleanup()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as err:  # noqa: BLE001 - handed to the test's thread
            failed.append(err)
            ready.set()

    thread = threading.Thread(target=run, name="bk-browser-app", daemon=True)
    thread.start()
    if not ready.wait(SERVER_START_TIMEOUT_S) or failed:
        raise RuntimeError(f"the test app did not start: {failed[0] if failed else 'timeout'}")
    loop, stop, base_url = handle[0]
    try:
        yield base_url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(SERVER_START_TIMEOUT_S)
        assert not thread.is_alive(), "the test app did not stop"


# the two canteens of the browser tests: C1 (with the box) and C2 in 640502, their managers and the regulator
BROWSER_USERS = {"reg1": ("regulator", "640502", "沙坡头区监管员"), "c1": ("canteen", "C1", "第一中学食堂管理员"),
                 "c2": ("canteen", "C2", "第二小学食堂管理员")}


def seed_two_canteens(storage: object, device_id: str, password: str, users: tuple[str, ...] = ("reg1", "c1", "c2")) -> None:
    """C1 第一中学食堂 (with box `device_id`) and C2 第二小学食堂 under 640502, and `users` of `BROWSER_USERS`."""
    from cloud_receiver.admin.accounts import create_user

    storage.add_canteen("C1", "第一中学食堂", "64050201")  # type: ignore[attr-defined]
    storage.add_device(device_id, "C1", "后厨边缘盒")  # type: ignore[attr-defined]
    storage.add_canteen("C2", "第二小学食堂", "64050202")  # type: ignore[attr-defined]
    for name in users:
        role, scope, shown = BROWSER_USERS[name]
        create_user(storage.sql, name, role, scope, password, shown)  # type: ignore[attr-defined]
