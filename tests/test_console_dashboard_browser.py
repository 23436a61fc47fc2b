"""大数据 dashboard in Debian's Chromium at desktop and phone size: a regulator logs in, every ECharts chart
draws (with Chinese labels, vendored ECharts only, no console error or CSP violation), and a click on a bar
of 预警类型分布 opens /alerts filtered by that type and period. Screenshots go to $BK_SCREENSHOTS (or the
test's tmp_path)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from support.api_server import live_receiver
from support.browser import CSP_WATCH, assert_fits, csp_violations, distinct_colours, log_in, open_page, screenshot

from bk_contract import Alert, Status
from bk_contract.payloads import CameraHealth
from cloud_receiver.admin.accounts import create_user
from cloud_receiver.storage.db import iso
from cloud_receiver.storage.schema import alerts
from cloud_receiver.storage.sqlite import Storage

pytestmark = pytest.mark.system

PASSWORD = "correct-horse-battery"
CANTEENS = {"C1": ("沙坡头区第一中学食堂", "64050201"), "C2": ("沙坡头区第二小学食堂", "64050202"),
            "C3": ("文昌镇第三小学食堂", "64050203"), "C4": ("中宁一中食堂", "64052101")}
TYPES = ("phone_use", "animal", "crowding", "no_mask", "smoking", "intrusion_off_hours")
CHARTS_DRAWN = """() => window.bkDashboard && window.bkDashboard.ready && window.echarts &&
  [...document.querySelectorAll('#dashboard .chart')].every(el =>
    window.echarts.getInstanceByDom(el) && el.querySelector('canvas') && el.dataset.drawn === 'true')"""
# the middle of the longest bar of 预警类型分布 (the top one), in viewport pixels, and its type code
TOP_TYPE_BAR = """() => {
  const el = document.querySelector('[data-chart="type"]');
  const chart = window.echarts.getInstanceByDom(el);
  const data = chart.getOption().series[0].data;
  const top = data.length - 1;
  const [x, y] = chart.convertToPixel({seriesIndex: 0}, [data[top].value / 2, top]);
  const box = el.getBoundingClientRect();
  return {x: box.left + x, y: box.top + y, type: data[top].item.type};
}"""

# a point of 每日预警趋势 a third of the way along (any spot of the plot opens its nearest day)
DAY_POINT = """() => {
  const el = document.querySelector('[data-chart="day"]');
  const chart = window.echarts.getInstanceByDom(el);
  const days = chart.getOption().xAxis[0].data;
  const i = Math.floor(days.length / 3);
  const [x, y] = chart.convertToPixel({seriesIndex: 0}, [i, 0]);
  const box = el.getBoundingClientRect();
  return {x: box.left + x, y: box.top + y - 20, day: days[i]};
}"""


def device(n: int) -> str:
    return f"640502000011800000{n:02d}"


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    """A receiver (no MQTT) on SQLite with four canteens, boxes and cameras, ~60 alerts over the last 25 days
    (more phone_use than anything else) and regulator account `li` of 640502."""
    with live_receiver(tmp_path, _seed) as (url, _):
        yield url


def _seed(storage: Storage) -> None:
    """Four canteens with a box and two cameras each (C2's box offline), 60 alerts, regulator `li`."""
    now = datetime.now(UTC)
    for i, (cid, (name, jur)) in enumerate(CANTEENS.items(), start=1):
        storage.add_canteen(cid, name, jur)
        storage.add_device(device(i), cid, f"{name}边缘盒")
        storage.record_status(Status(device_id=device(i), online=i != 2, ts=now,
                                     cameras=[CameraHealth(id="cam1", name="后厨", state="online"),
                                              CameraHealth(id="cam2", name="操作间", state="online" if i % 2 else "offline")]),
                              iso(now) or "")
    for k in range(60):
        i = k % 4 + 1
        started = now - timedelta(days=k % 25, hours=(k * 7) % 24)
        kind = TYPES[0] if k % 3 == 0 else TYPES[k % len(TYPES)]
        storage.upsert_alert(Alert(id=f"A{k:04d}", device_id=device(i), camera_id=f"cam{k % 2 + 1}", type=kind,
                                   started_at=started, score=0.9), iso(now) or "")
    with storage.sql.write() as conn:  # some rectified, some reviewed: the rate is not 0
        conn.execute(alerts.update().where(alerts.c.id.in_([f"A{k:04d}" for k in range(0, 60, 5)]))
                     .values(status="已整改"))
        conn.execute(alerts.update().where(alerts.c.id.in_([f"A{k:04d}" for k in range(1, 60, 4)]))
                     .values(status="复核通过"))
    create_user(storage.sql, "li", "regulator", "640502", PASSWORD, "李监管")


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_dashboard_draws_and_drills_down(browser, base_url: str, tmp_path: Path, viewport: str) -> None:
    """Every chart draws cleanly offline at this size, and clicking the top 类型 bar opens /alerts?type=…"""
    with open_page(browser, viewport) as (page, log):
        page.add_init_script(CSP_WATCH)
        log_in(page, base_url, "li", PASSWORD, "/dashboard")
        page.wait_for_function(CHARTS_DRAWN, timeout=15_000)
        assert page.evaluate("() => window.bkDashboard.error") is None
        assert page.locator("[data-stat=total]").inner_text() == "45"  # C1–C3 of 640502: three alerts in four
        assert page.locator("[data-stat=device_rate]").inner_text() == "66.7%"  # C2's box is offline
        sizes = page.evaluate("() => [...document.querySelectorAll('#dashboard .chart')]"
                              ".map(el => [el.clientWidth, el.clientHeight])")
        assert len(sizes) == 5 and all(w > 300 and h >= 200 for w, h in sizes), sizes
        assert_fits(page)
        shot = screenshot(page, f"dashboard-{viewport}", tmp_path)
        assert distinct_colours(shot) > 300
        assert csp_violations(page) == []
        log.assert_clean()

        page.locator('[data-chart="type"]').scroll_into_view_if_needed()
        bar = page.evaluate(TOP_TYPE_BAR)
        assert bar["type"] == "phone_use"
        since, until = page.locator("#dashboard").get_attribute("data-since"), page.locator("#dashboard").get_attribute("data-until")
        page.mouse.click(bar["x"], bar["y"])
        page.wait_for_url("**/alerts?**", timeout=10_000)
        query = parse_qs(urlsplit(page.url).query)
        assert query == {"type": ["phone_use"], "region": ["640502"], "since": [since], "until": [until]}

        page.go_back()
        page.wait_for_function(CHARTS_DRAWN, timeout=15_000)
        page.locator('[data-chart="day"]').scroll_into_view_if_needed()
        point = page.evaluate(DAY_POINT)
        page.mouse.click(point["x"], point["y"])
        page.wait_for_url("**/alerts?**", timeout=10_000)
        assert parse_qs(urlsplit(page.url).query) == {"region": ["640502"], "since": [point["day"]],
                                                      "until": [point["day"]]}
        log.assert_offline()


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_schools_page_fits_the_screen(browser, base_url: str, tmp_path: Path, viewport: str) -> None:
    """学校 lists the regulator's three canteens with live links, as a table on a desktop and as cards on a phone."""
    with open_page(browser, viewport) as (page, log):
        page.add_init_script(CSP_WATCH)
        log_in(page, base_url, "li", PASSWORD, "/schools")
        assert page.locator("tbody tr[data-id]").count() == 3
        assert page.locator(f'a[href="/live/{device(1)}/cam1"]').is_visible()
        display = page.locator("tbody tr[data-id]").first.evaluate("e => getComputedStyle(e).display")
        assert display == ("block" if viewport == "phone" else "table-row")
        assert_fits(page)
        assert distinct_colours(screenshot(page, f"schools-{viewport}", tmp_path)) > 50
        assert csp_violations(page) == []
        log.assert_clean()
