"""The browser harness (tests/support/browser.py) on a tiny page drawing a Chinese bar chart with the
vendored ECharts, in Debian's Chromium at desktop and phone size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiohttp import web
from support import browser as harness
from support.browser import (
    LOCALE,
    TIMEZONE,
    VIEWPORTS,
    chromium_browser,
    distinct_colours,
    open_page,
    require_chromium,
    screenshot,
    serve_app,
)

from cloud_receiver.web import VENDOR_DIR, VENDOR_MANIFEST
from scripts.vendor_assets import load_manifest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.system

ECHARTS = next(e for e in load_manifest(VENDOR_MANIFEST) if e.file == "echarts/echarts.min.js")
CHART_TIMEOUT_MS = 15_000
MIN_COLOURS = 50  # anti-aliased bars, axes and CJK glyphs give hundreds; a blank page has one

CHART_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>明厨亮灶 图表</title>
<script src="/static/vendor/echarts/echarts.min.js"></script>
<style>body { margin: 0; font-family: sans-serif; } #chart { width: 100%; height: 420px; }</style>
</head><body>
<h1>各食堂本周告警</h1>
<div id="chart"></div>
<script>
const chart = echarts.init(document.getElementById("chart"));
chart.on("finished", () => { document.body.dataset.chart = "drawn"; });
chart.setOption({
  animation: false,
  title: { text: "告警次数" },
  xAxis: { type: "category", data: ["一食堂", "二食堂", "三食堂", "教工餐厅"] },
  yAxis: { type: "value" },
  series: [{ type: "bar", name: "告警", data: [12, 7, 3, 9], label: { show: true, position: "top" } }],
});
</script>
</body></html>"""

# A page that breaks both rules the harness enforces: a console error and a request off the machine.
BAD_PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<img src="https://cdn.example.com/echarts.min.js">
<script>console.error("出错了");</script>
</body></html>"""


def html_handler(html: str):  # noqa: ANN201 - an aiohttp handler
    async def handle(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    return handle


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", html_handler(CHART_PAGE))
    app.router.add_get("/bad", html_handler(BAD_PAGE))
    app.router.add_static("/static/vendor/", VENDOR_DIR)
    return app


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as b:
        yield b


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_app(make_app()) as url:
        yield url


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_vendored_echarts_draws_a_chinese_chart(browser: Browser, base_url: str, viewport: str, tmp_path: Path) -> None:
    """The vendored ECharts draws the chart offline, at the right size, with no error; the screenshot is not blank."""
    size = VIEWPORTS[viewport]
    with open_page(browser, viewport) as (page, log):
        page.goto(f"{base_url}/")
        page.wait_for_selector("#chart canvas", timeout=CHART_TIMEOUT_MS)
        page.wait_for_function("document.body.dataset.chart === 'drawn'", timeout=CHART_TIMEOUT_MS)
        assert page.evaluate("window.echarts.version") == ECHARTS.version
        assert page.evaluate("window.devicePixelRatio") == size.device_scale_factor
        canvas_width = page.evaluate("document.querySelector('#chart canvas').width")
        assert canvas_width == size.width * size.device_scale_factor
        assert page.evaluate("navigator.language") == LOCALE
        assert page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == TIMEZONE
        shot = screenshot(page, f"echarts-{viewport}", tmp_path)
        log.assert_offline()
        log.assert_clean()
    assert shot.stat().st_size > 0
    from PIL import Image

    with Image.open(shot) as img:
        assert img.width == size.width * size.device_scale_factor
    assert distinct_colours(shot) > MIN_COLOURS, f"{shot} looks blank"


def test_harness_catches_console_errors_and_external_requests(browser: Browser, base_url: str) -> None:
    """A console error and a request to another host are both recorded, the request aborted, and assert_clean fails."""
    with open_page(browser, "desktop") as (page, log):
        page.goto(f"{base_url}/bad")
        page.wait_for_load_state("load")
        assert log.external_requests == ["https://cdn.example.com/echarts.min.js"]
        assert any("出错了" in e for e in log.console_errors), log.console_errors
        assert any("cdn.example.com" in r for r in log.failed_requests), log.failed_requests
        with pytest.raises(AssertionError, match="cdn.example.com"):
            log.assert_offline()
        with pytest.raises(AssertionError, match="出错了"):
            log.assert_clean()


def test_require_chromium_fails_naming_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without Chromium the test fails (not skips) with a message saying what to install."""
    monkeypatch.setattr(harness, "CHROMIUM", tmp_path / "chromium")
    with pytest.raises(pytest.fail.Exception, match=r"chromium.*apt-get install chromium"):
        require_chromium()
