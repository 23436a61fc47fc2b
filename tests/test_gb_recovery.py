"""GB/T 28181 under loss and abuse: a lost Catalog answer, a device closing its TCP media connection,
bursts of wrong-password REGISTERs. The project's device emulator plays the device."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support.gb_device_emulator import DEVICE, EmulatorConfig, GbDeviceEmulator, gb_config, load_h264_units
from support.waiting import async_wait_for

from edge_agent.capture.gb28181 import GbChannelSource, GbEvent, GbSipServer
from edge_agent.capture.gb28181.manscdp import CatalogItem
from edge_agent.errors import RetryLater

pytestmark = pytest.mark.integration

CHANNELS = [CatalogItem(f"6405020000131000000{i}", name=f"后厨摄像头{i}", manufacturer="Hik", status="ON")
            for i in range(1, 3)]
OTHER_DEVICE = "64050200001180000002"


@pytest.fixture(scope="module")
def h264_units(tmp_path_factory) -> list[bytes]:
    return load_h264_units(Path(tmp_path_factory.mktemp("gb")))


@pytest.fixture
def passwords(monkeypatch) -> None:
    monkeypatch.setenv("BK_TEST_GB_DEV_PW", "dev-secret")
    monkeypatch.setenv("BK_TEST_GB_GLOBAL_PW", "global-secret")


def catalog_tasks(server: GbSipServer) -> list[asyncio.Task]:
    return [t for t in server._tasks if t.get_name() == f"gb-catalog-{DEVICE}" and not t.done()]


@pytest.mark.parametrize("sip_t", ["udp", "tcp"])
async def test_lost_catalog_answer_is_queried_again_within_one_interval(sip_t, passwords):
    """The device drops its first Catalog answer: the box asks again and the channel is online within one interval."""
    interval = 1.0
    events: list[GbEvent] = []
    server = GbSipServer(gb_config(catalog_retry_s=interval, catalog_retry_max_s=8.0), on_event=events.append)
    await server.start()
    emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, DEVICE, "dev-secret", transport=sip_t,
                                          channels=CHANNELS, page_size=1, drop_catalog_answers=1))
    loop = asyncio.get_running_loop()
    try:
        await emu.start()
        with capture_logs() as logs:
            assert await emu.register() == 200
            emu.start_keepalives()
            await async_wait_for(lambda: emu.catalog_queries, timeout=2, what="the first Catalog query")
            first = emu.catalog_queries[0]
            await async_wait_for(lambda: any(c.channel_id == CHANNELS[1].device_id and c.online
                                             for c in server.channels()),
                                 timeout=interval + 3, what="the channel online after the re-query")
            online_after = loop.time() - first
        assert len(emu.catalog_queries) == 2
        requery_gap = emu.catalog_queries[1] - first
        assert interval - 0.05 <= requery_gap < interval + 0.5, requery_gap
        assert online_after < interval + 0.5, online_after  # one re-query interval plus the answer's trip
        assert [e.kind for e in events if e.kind == "catalog"] == ["catalog"]
        [failed] = [e for e in logs if e["event"] == "gb_catalog_failed"]
        assert failed["error_type"] == "RetryLater" and failed["cause"] == "TimeoutError"
        assert failed["error"] == (f"GB device {DEVICE} accepted the Catalog query (SN 1) but sent no complete "
                                   f"catalog within {interval:g} s: no Catalog response arrived")
        assert failed["attempt"] == 1 and failed["retry_in_s"] < 0.2 and failed["interval_s"] == 2 * interval
        await async_wait_for(lambda: not catalog_tasks(server), timeout=1, what="the re-query task ended")
    finally:
        await emu.stop()
        await server.stop()


async def test_catalog_requery_backs_off_to_the_cap_and_stops_when_offline(passwords):
    """Unanswered queries are repeated at 0.2, 0.4, 0.5, 0.5 s; offline ends them; keepalives back → queried again."""
    events: list[GbEvent] = []
    server = GbSipServer(gb_config(keepalive_timeout_s=0.2, catalog_retry_s=0.2, catalog_retry_max_s=0.5),
                         on_event=events.append)
    await server.start()
    emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, DEVICE, "dev-secret", channels=CHANNELS,
                                          keepalive_s=0.05, drop_catalog_answers=1000))
    try:
        await emu.start()
        assert await emu.register() == 200
        emu.start_keepalives()
        await async_wait_for(lambda: len(emu.catalog_queries) >= 5, timeout=5, what="5 Catalog queries")
        q = emu.catalog_queries
        gaps = [b - a for a, b in zip(q, q[1:], strict=False)][:4]
        for gap, expected in zip(gaps, [0.2, 0.4, 0.5, 0.5], strict=True):
            assert expected - 0.05 <= gap < expected + 0.3, gaps
        assert server.channels() == [] and server.devices()[DEVICE].online

        emu.stop_keepalives()
        await async_wait_for(lambda: any(e.kind == "device_offline" for e in events), timeout=3, what="offline")
        await async_wait_for(lambda: not catalog_tasks(server), timeout=1, what="re-queries stopped")
        asked = len(emu.catalog_queries)

        emu.cfg.drop_catalog_answers = 0
        emu.start_keepalives()  # heard again: online by keepalive, still no catalog → asked again
        await async_wait_for(lambda: len(server.channels()) == 2, timeout=3, what="catalog after keepalives resumed")
        assert len(emu.catalog_queries) == asked + 1
        assert [e.detail.get("reason") for e in events if e.kind == "device_online"] == [None, "keepalive"]
    finally:
        await emu.stop()
        await server.stop()


@pytest.mark.parametrize(("sip_t", "media_t", "framing"), [
    ("tcp", "tcp_passive", "4571"),
    ("udp", "tcp_active", "interleaved"),
])
async def test_device_closing_tcp_media_ends_the_session_at_once(sip_t, media_t, framing, h264_units, passwords):
    """The device closes its TCP media connection (no BYE): every frame decodes and the session ends at once."""
    media_timeout = 5.0
    server = GbSipServer(gb_config())
    await server.start()
    emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, DEVICE, "dev-secret", transport=sip_t,
                                          channels=CHANNELS, units=h264_units, tcp_framing=framing,
                                          bye_after_clip=False))
    try:
        await emu.start()
        assert await emu.register() == 200
        emu.start_keepalives()
        await async_wait_for(lambda: len(server.channels()) == 2, what="catalog")
        source = GbChannelSource(server, CHANNELS[0].device_id, transport=media_t, media_timeout_s=media_timeout)

        def consume() -> tuple[int, float, float, BaseException | None]:
            count, last = 0, time.monotonic()
            try:
                for _ in source.frames(threading.Event()):
                    count, last = count + 1, time.monotonic()
            except RetryLater as err:
                return count, last, time.monotonic(), err
            return count, last, time.monotonic(), None

        count, _, ended, err = await asyncio.to_thread(consume)
        assert isinstance(err, RetryLater), err
        assert "ended the session (the device closed the TCP media connection)" in str(err)
        assert count == len(h264_units) == 120
        assert emu.media_closed_at is not None
        assert ended - emu.media_closed_at < 1.0, ended - emu.media_closed_at  # not media_timeout_s (5 s) later
        await async_wait_for(lambda: emu.byes_received == 1, what="BYE for the ended dialog")
        assert server.sessions == {}
    finally:
        await emu.stop()
        await server.stop()


async def test_wrong_password_burst_is_one_event_then_refused_at_once(passwords):
    """10 wrong REGISTERs: one event, 403 without a challenge once over the limit; other devices and a later right one work."""
    limit, window = 3, 1.0
    events: list[GbEvent] = []
    sent: list[bytes] = []
    server = GbSipServer(gb_config(register_fail_limit=limit, register_fail_window_s=window), on_event=events.append,
                         capture=lambda kind, data: sent.append(data) if kind == "sip_out" else None)
    await server.start()
    emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, DEVICE, "dev-secret"))
    other = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, OTHER_DEVICE, "global-secret"))
    try:
        await emu.start()
        await other.start()
        t0 = time.monotonic()
        statuses = [await emu.register(password="guess") for _ in range(10)]
        burst_s = time.monotonic() - t0
        assert statuses == [403] * 10 and burst_s < 2.0
        assert [(e.kind, e.device_id, e.detail["reason"]) for e in events] == [
            ("registration_rejected", DEVICE, "wrong password")]
        challenges = sum(m.startswith(b"SIP/2.0 401") for m in sent)
        assert challenges == limit  # after the limit: 403 at once, no challenge, no digest check
        key = ("127.0.0.1", DEVICE)
        assert server.throttle.retry_in(key) > 0
        assert await emu.register() == 403  # the right password too, while the burst's lock lasts
        assert await other.register() == 200  # another device id from the same address is not affected

        await async_wait_for(lambda: server.throttle.retry_in(key) == 0, timeout=window + 1, what="the lock to end")
        assert await emu.register() == 200
        assert server.devices()[DEVICE].online and len(server.throttle) == 0
        kinds = [e.kind for e in events if e.device_id == DEVICE]
        assert kinds == ["registration_rejected", "device_online"]
        assert await emu.register(password="guess") == 403  # a new burst later: one new event
        assert [e.kind for e in events if e.device_id == DEVICE][-1] == "registration_rejected"
    finally:
        await emu.stop()
        await other.stop()
        await server.stop()
