"""GB/T 28181 end to end: the device emulator registers, sends its catalog and streams real H.264."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from support.gb_device_emulator import DEVICE, EmulatorConfig, GbDeviceEmulator, gb_config, load_h264_units
from support.waiting import async_wait_for

from edge_agent.capture.gb28181 import GbChannelSource, GbEvent, GbSipServer
from edge_agent.capture.gb28181.manscdp import CatalogItem
from edge_agent.errors import RetryLater

pytestmark = pytest.mark.integration

CHANNELS = [CatalogItem(f"6405020000131000000{i}", name=f"后厨摄像头{i}", manufacturer="Hik", status="ON")
            for i in range(1, 4)]


@pytest.fixture(scope="module")
def h264_units(tmp_path_factory) -> list[bytes]:
    return load_h264_units(Path(tmp_path_factory.mktemp("gb")))


async def run_stream(sip_transport: str, media_transport: str, units: list[bytes], monkeypatch, **emu_kw):
    monkeypatch.setenv("BK_TEST_GB_DEV_PW", "dev-secret")
    monkeypatch.setenv("BK_TEST_GB_GLOBAL_PW", "global-secret")
    events: list[GbEvent] = []
    server = GbSipServer(gb_config(), on_event=events.append)
    await server.start()
    emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, DEVICE, "dev-secret", transport=sip_transport,
                                          channels=CHANNELS, page_size=2, units=units, **emu_kw))
    try:
        await emu.start()
        assert await emu.register() == 200
        assert emu.date_header and len(emu.date_header) == 23
        emu.start_keepalives()
        await async_wait_for(lambda: len(server.channels()) == 3)
        assert emu.catalog_pages_sent == 2
        assert all(c.online for c in server.channels())
        assert server.channels()[0].name == "后厨摄像头1"

        source = GbChannelSource(server, CHANNELS[1].device_id, transport=media_transport, media_timeout_s=5)
        stop = threading.Event()

        seen: dict = {}

        def consume() -> tuple[list, BaseException | None]:
            got = []
            try:
                for f in source.frames(stop):
                    if not got:
                        seen["answered"] = source.session.answered_ssrc
                        seen["bound"] = source.session.receiver.expected_ssrc
                        seen["offered"] = source.session.offered_ssrc
                    got.append((f.width, f.height))
            except RetryLater as err:
                return got, err
            return got, None

        frames, err = await asyncio.to_thread(consume)
        assert isinstance(err, RetryLater) and "ended the session" in str(err)
        assert emu.invites == 1
        # The device answered with its own SSRC; the receiver re-bound to it.
        assert seen["answered"] == "123456789" and seen["bound"] == 123456789 and seen["offered"] != "123456789"
        return frames, events, server, emu
    finally:
        await emu.stop()
        await server.stop()


@pytest.mark.parametrize(("sip_t", "media_t", "framing", "shuffle"), [
    ("udp", "udp", "4571", True),
    ("tcp", "tcp_passive", "4571", False),
    ("udp", "tcp_active", "interleaved", False),
])
async def test_emulator_streams_real_h264(sip_t, media_t, framing, shuffle, h264_units, monkeypatch):
    """A registered device's channel is invited and every frame of the clip is decoded."""
    frames, events, _, emu = await run_stream(sip_t, media_t, h264_units, monkeypatch, tcp_framing=framing,
                                               shuffle=shuffle)
    assert len(h264_units) == 120
    assert len(frames) == 120
    assert set(frames) == {(176, 144)}
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["device_online", "catalog"]
    assert "session_ended" in kinds


async def test_device_goes_offline_when_keepalives_stop(monkeypatch):
    """Three missed keepalive intervals mark the device and its channels offline and fire the event."""
    monkeypatch.setenv("BK_TEST_GB_DEV_PW", "dev-secret")
    events: list[GbEvent] = []
    interval = 0.2
    server = GbSipServer(gb_config(keepalive_timeout_s=interval), on_event=events.append)
    await server.start()
    emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, DEVICE, "dev-secret", channels=CHANNELS,
                                          keepalive_s=0.05))
    try:
        await emu.start()
        assert await emu.register() == 200
        registered = time.monotonic()
        emu.start_keepalives()
        await async_wait_for(lambda: len(server.channels()) == 3)
        # a watchdog pass more than 3 intervals after REGISTER would have found a silent device offline
        await async_wait_for(lambda: server.watchdog_at > registered + 4 * interval, timeout=3,
                             what="a keepalive watchdog pass 4 intervals after REGISTER")
        assert not any(e.kind == "device_offline" for e in events)
        assert server.devices()[DEVICE].online
        emu.stop_keepalives()
        await async_wait_for(lambda: any(e.kind == "device_offline" for e in events), timeout=10)  # generous: a loaded machine runs the watchdog late
        off = next(e for e in events if e.kind == "device_offline")
        assert off.device_id == DEVICE and off.detail["reason"] == "keepalive timeout"
        assert not any(c.online for c in server.channels())
        with pytest.raises(RetryLater, match="offline"):
            await server.invite(CHANNELS[0].device_id)
    finally:
        await emu.stop()
        await server.stop()


async def test_wrong_password_gets_403_and_unregister(monkeypatch):
    """The per-device password wins over the global one; a wrong one gets 403; Expires 0 unregisters."""
    monkeypatch.setenv("BK_TEST_GB_DEV_PW", "dev-secret")
    monkeypatch.setenv("BK_TEST_GB_GLOBAL_PW", "global-secret")
    events: list[GbEvent] = []
    server = GbSipServer(gb_config(), on_event=events.append)
    await server.start()
    emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, DEVICE, "dev-secret"))
    try:
        await emu.start()
        assert await emu.register(password="global-secret") == 403
        assert DEVICE not in server.devices()
        assert events[-1].kind == "registration_rejected"
        assert await emu.register() == 200
        assert server.devices()[DEVICE].online
        assert await emu.register(expires=0) == 200
        assert not server.devices()[DEVICE].online
        assert events[-1].kind == "device_offline" and events[-1].detail["reason"] == "unregistered"
    finally:
        await emu.stop()
        await server.stop()


async def test_garbage_datagram_logged_and_server_survives(monkeypatch, capsys):
    """Malformed SIP over UDP and TCP is logged with a clear error; a valid REGISTER still works."""
    monkeypatch.setenv("BK_TEST_GB_DEV_PW", "dev-secret")
    server = GbSipServer(gb_config())
    await server.start()
    try:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("127.0.0.1", server.port))
        for junk in (b"\x00\xff garbage", b"INVITE sip:x SIP/2.0\r\nCSeq: abc\r\n\r\n", b"SIP/2.0 999 X\r\n\r\n"):
            udp.sendto(junk)
        udp.close()
        _, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(b"NOT SIP AT ALL\r\n\r\n")
        await w.drain()
        w.close()
        text = ""

        def logged() -> bool:
            nonlocal text
            out = capsys.readouterr()
            text += out.out + out.err
            return text.count("sip_malformed") >= 3 and "sip_tcp_garbage" in text

        await async_wait_for(logged, timeout=3, what="3 UDP datagrams and the TCP garbage logged")
        assert "neither a request nor a status line" in text and "lacks the Call-ID header" in text
        assert "SIP message over TCP lacks Content-Length" in text
        emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, DEVICE, "dev-secret"))
        await emu.start()
        assert await emu.register() == 200
        await emu.stop()
    finally:
        await server.stop()


async def test_channel_source_retry_later_when_offline_or_silent(monkeypatch):
    """GbChannelSource raises RetryLater for an unknown channel and when no media arrives in time."""
    monkeypatch.setenv("BK_TEST_GB_DEV_PW", "dev-secret")
    server = GbSipServer(gb_config())
    await server.start()
    emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, DEVICE, "dev-secret", channels=CHANNELS[:1],
                                          units=[], bye_after_clip=False))
    try:
        stop = threading.Event()
        unknown = GbChannelSource(server, "64050200001319999999")
        with pytest.raises(RetryLater, match="not in any registered"):
            await asyncio.to_thread(lambda: next(iter(unknown.frames(stop))))
        await emu.start()
        assert await emu.register() == 200
        emu.start_keepalives()
        await async_wait_for(lambda: len(server.channels()) == 1)
        silent = GbChannelSource(server, CHANNELS[0].device_id, media_timeout_s=0.5)
        with pytest.raises(RetryLater, match="no media"):
            await asyncio.to_thread(lambda: next(iter(silent.frames(stop))))
        await async_wait_for(lambda: emu.byes_received == 1)  # the source said BYE on its way out
        assert server.sessions == {}
    finally:
        await emu.stop()
        await server.stop()
