"""Alert push to WeCom / DingTalk robots, against a local fake robot server.

The real robot services (qyapi.weixin.qq.com, oapi.dingtalk.com) cannot be reached from here, so
`FakeRobots` is a local aiohttp server that imitates their webhook API: JSON text messages in,
`{"errcode": 0, "errmsg": "ok"}` out, and for DingTalk the `timestamp` / `sign` check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from support.fake_robots import SECRET, FakeRobots

from bk_contract.violations import VIOLATION_NAMES, type_name
from cloud_receiver.push import robots as push
from cloud_receiver.push.robots import AlertNotice, Pusher, PushSettings, RateWindow, Robot

pytestmark = pytest.mark.unit

T0 = datetime(2024, 5, 1, 0, 30, tzinfo=UTC)


@pytest.fixture
async def robots():
    fake = FakeRobots()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url(""))
    await server.close()


def _notice(i: int) -> AlertNotice:
    return AlertNotice(f"A{i:04d}", "第一中学食堂", f"后厨{i}", "phone_use", T0, T0 + timedelta(hours=24),
                       f"https://bk.example/a/A{i:04d}")


def _alerts_in(text: str) -> int:
    m = re.match(r"【明厨亮灶预警汇总】共 (\d+) 条", text)
    return int(m.group(1)) if m else 1


def test_alert_text_in_chinese():
    """A single alert reads in Simplified Chinese with canteen, camera, type name, Beijing time and deadline."""
    text = push.alert_text(_notice(1))
    assert text == ("【明厨亮灶预警】第一中学食堂 后厨1 检测到 玩手机，时间 2024-05-01 08:30，"
                    "请于 2024-05-02 08:30 前整改。查看：https://bk.example/a/A0001")


def test_violation_names_cover_contract():
    """Every violation type of the contract has a Chinese name."""
    from bk_contract.payloads import VIOLATION_TYPES
    assert set(VIOLATION_NAMES) == set(VIOLATION_TYPES)
    assert type_name("animal") == "动物/鼠患"


def test_summary_fits_wecom_limit():
    """A summary of many alerts stays under the byte limit and says how many are not listed."""
    text = push.summary_text([_notice(i) for i in range(200)])
    assert len(text.encode()) <= push.TEXT_BYTES_MAX
    assert text.startswith("【明厨亮灶预警汇总】共 200 条")
    shown = len(re.findall(r"^\d+\. ", text, re.M))
    assert f"另有 {200 - shown} 条" in text and shown > 3


def test_dingtalk_sign_known_value():
    """The DingTalk signature is base64 HMAC-SHA256 of 'timestamp\\nsecret', URL-encoded."""
    raw = hmac.new(b"s3cret", b"1700000000000\ns3cret", hashlib.sha256).digest()
    assert push.dingtalk_sign("s3cret", 1700000000000) == base64.b64encode(raw).decode().replace("+", "%2B").replace(
        "/", "%2F").replace("=", "%3D")
    url = push.robot_url(Robot("r", "dingtalk", "https://x/robot/send?access_token=t", "s3cret"), 1700000000000)
    assert url.startswith("https://x/robot/send?access_token=t&timestamp=1700000000000&sign=")
    assert push.robot_url(Robot("w", "wecom", "https://y/send?key=k"), 1) == "https://y/send?key=k"


def test_rate_window_rolls():
    """The window allows `limit` events, then frees a slot once the oldest is older than the window."""
    now = [0.0]
    w = RateWindow(3, 10.0, clock=lambda: now[0])
    for _ in range(3):
        w.record()
    assert w.available() == 0 and w.wait_s() == 10.0
    now[0] = 9.9
    assert w.available() == 0
    now[0] = 10.0
    assert w.available() == 3 and w.wait_s() == 0.0


async def test_dingtalk_signature_verifies(robots):
    """The fake DingTalk server verifies the signature of every message sent."""
    fake, base = robots
    async with aiohttp.ClientSession() as session:
        pusher = Pusher(session, PushSettings())
        pusher.enqueue(Robot("d1", "dingtalk", f"{base}/robot/send?access_token=abc", SECRET), _notice(1))
        assert await pusher.drain(5)
        await pusher.close()
    assert fake.bad_signatures == 0
    assert [k for _, k, _ in fake.received] == ["dingtalk"]
    assert "玩手机" in fake.received[0][2]


async def test_wrong_secret_is_retried_not_dropped(robots):
    """A refused signature is a failure that keeps the alert queued and is reported at close."""
    fake, base = robots
    async with aiohttp.ClientSession() as session:
        pusher = Pusher(session, PushSettings(retry_base_s=0.01, retry_max_s=0.02))
        pusher.enqueue(Robot("d1", "dingtalk", f"{base}/robot/send", "wrong"), _notice(1))
        assert not await pusher.drain(0.3)
        q = pusher.queues["d1"]
        assert q.failures >= 2 and pusher.pending_count() == 1 and q.delivered_alerts == 0
        await pusher.close()
    assert fake.bad_signatures >= 2 and not fake.received


@pytest.mark.parametrize("kind", ["wecom", "dingtalk"])
async def test_rate_limit_and_merge(robots, kind):
    """60 alerts at once: at most 20 messages in any rolling window, merged, and every alert delivered."""
    fake, base = robots
    window = 0.5
    path = "/cgi-bin/webhook/send?key=k" if kind == "wecom" else "/robot/send?access_token=t"
    robot = Robot("r1", kind, base + path, SECRET if kind == "dingtalk" else None)
    async with aiohttp.ClientSession() as session:
        pusher = Pusher(session, PushSettings(limit=20, window_s=window, merge_when_left=3))
        for i in range(60):
            pusher.enqueue(robot, _notice(i))
        assert await pusher.drain(5)
        q = pusher.queues["r1"]
        await pusher.close()
    times = [t for t, _, _ in fake.received]
    for i, t in enumerate(times):
        in_window = [u for u in times[i:] if u - t < window - 0.05]
        assert len(in_window) <= 20
    texts = [text for _, _, text in fake.received]
    assert sum(_alerts_in(t) for t in texts) == 60 == q.delivered_alerts
    assert any(t.startswith("【明厨亮灶预警汇总】") for t in texts)
    assert len(texts) < 60 and q.sent_messages == len(texts)


async def test_retries_deliver_after_failures(robots):
    """HTTP 502 and errcode != 0 answers are retried with back-off until the alerts are delivered."""
    fake, base = robots
    fake.fail_first = 4
    async with aiohttp.ClientSession() as session:
        pusher = Pusher(session, PushSettings(retry_base_s=0.01, retry_max_s=0.05))
        robot = Robot("w1", "wecom", f"{base}/cgi-bin/webhook/send?key=k")
        for i in range(3):
            pusher.enqueue(robot, _notice(i))
        assert await pusher.drain(5)
        q = pusher.queues["w1"]
        await pusher.close()
    assert q.failures == 4
    assert sum(_alerts_in(t) for _, _, t in fake.received) == 3 == q.delivered_alerts


async def test_unreachable_robot_keeps_alerts():
    """A robot that cannot be reached keeps its alerts queued (counted failures), nothing dropped."""
    async with aiohttp.ClientSession() as session:
        pusher = Pusher(session, PushSettings(retry_base_s=0.01, retry_max_s=0.02, timeout_s=0.5))
        pusher.enqueue(Robot("x", "wecom", "http://127.0.0.1:9/send"), _notice(1))
        assert not await pusher.drain(0.3)
        assert pusher.queues["x"].failures >= 1 and pusher.pending_count() == 1
        await pusher.close()
