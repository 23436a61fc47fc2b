"""GB/T 28181 cameras in the running Agent: the emulated device registers, streams, goes silent, comes back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.gb_device_emulator import EmulatorConfig, GbDeviceEmulator, clip_path, load_h264_units
from support.waiting import wait_for, wait_until

from bk_contract import Alert
from devkit.localbroker import free_port
from edge_agent.app.agent import Agent, PipelineTuning
from edge_agent.capture.gb28181.manscdp import CatalogItem
from edge_agent.capture.sources import open_source
from edge_agent.capture.stream_reader import StreamReader
from edge_agent.config import AgentConfig
from edge_agent.errors import NeedsHuman, RetryLater
from edge_agent.outbox.store import Outbox

pytestmark = pytest.mark.system

DEVICE = "64050200001180000001"
GB_DEVICE = "64050200001320000007"
CHANNELS = [CatalogItem(f"6405020000131000000{i}", name=f"后厨摄像头{i}", manufacturer="Hik", status="ON")
            for i in range(1, 3)]
PW_ENV = "BK_TEST_AGENT_GB_PW"


@pytest.fixture(scope="module")
def h264_units(tmp_path_factory) -> list[bytes]:
    return load_h264_units(Path(tmp_path_factory.mktemp("gb")))


class EmulatorThread:
    """A GbDeviceEmulator on its own asyncio loop thread, driven synchronously from the test."""

    def __init__(self, cfg: EmulatorConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gb-emulator", daemon=True)
        self.thread.start()
        self.emu = GbDeviceEmulator(cfg)

    def call(self, fn: Callable, timeout: float = 10.0):
        """Run `fn()` (a coroutine function or a plain function) on the emulator's loop."""
        async def run():
            out = fn()
            return await out if asyncio.iscoroutine(out) else out
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.emu.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Running:
    """An Agent (real detector and Outbox, uplink disabled) on its own thread, with its events."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.events: list[Alert] = []
        self.outbox = Outbox(cfg.storage.path, device_id=cfg.device.id)
        self.agent = Agent(cfg, outbox=self.outbox, on_event=self.events.append,
                           tuning=PipelineTuning(housekeeping_s=0.2))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop,), name="agent-gb-test")

    def __enter__(self) -> Running:
        self.thread.start()
        self.wait_for(lambda: self.agent.gb is not None and self.agent.gb.running, 10, "GB SIP server up")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        t0 = time.monotonic()
        self.thread.join(15)
        self.stopped_in = time.monotonic() - t0
        assert not self.thread.is_alive() and self.stopped_in < 10, "agent did not stop within 10 s"
        assert not any(t.name == "gb28181-sip" for t in threading.enumerate()), "SIP thread left running"
        self.outbox.close()

    def health(self, cam: str):
        return next(h for h in self.agent.health() if h.id == cam)

    def wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        wait_for(pred, timeout, what, step=0.05, detail=lambda: f"health={self.agent.health()} stats="
                 f"{self.agent.stats()} events={[(e.camera_id, e.type, e.state) for e in self.events]}")

    def offline_events(self, cam: str, state: str) -> list[Alert]:
        return [e for e in self.events if e.camera_id == cam and e.type == "camera_offline" and e.state == state]


def gb_agent_config(tmp_path: Path, cameras: list[dict], **gb) -> AgentConfig:
    return AgentConfig.model_validate({
        "device": {"id": DEVICE}, "storage": {"path": str(tmp_path / "agent.db")}, "uplink": {"enabled": False},
        "gb28181": {"enabled": True, "host": "127.0.0.1", "port": free_port(udp_too=True), "keepalive_timeout_s": 0.5,
                    "media_port_range": (0, 0), "media_ip": "127.0.0.1", "password_env": PW_ENV, **gb},
        "cameras": cameras})


def gb_camera(cam_id: str, channel: str, device: str = GB_DEVICE, transport: str = "udp", **kw) -> dict:
    return {"id": cam_id, "source": {"type": "gb28181", "gb_device_id": device, "gb_channel_id": channel,
                                     "gb_media_transport": transport},
            "open_timeout_s": 3, "read_timeout_s": 3, "reconnect_min_s": 0.2, "reconnect_max_s": 0.5,
            "offline_after_s": 2.0, **kw}


@pytest.mark.parametrize(("sip_t", "media_t"), [("udp", "udp"), ("tcp", "tcp_passive"), ("udp", "tcp_active")])
def test_gb_camera_streams_goes_offline_and_back(sip_t, media_t, h264_units, tmp_path, monkeypatch):
    """Registered device → catalog → INVITE → frames decoded; keepalives stop → camera_offline; back → end."""
    monkeypatch.setenv(PW_ENV, "gb-secret")
    cfg = gb_agent_config(tmp_path, [gb_camera("gbcam", CHANNELS[1].device_id, transport=media_t)])
    emu = EmulatorThread(EmulatorConfig("127.0.0.1", cfg.gb28181.port, GB_DEVICE, "gb-secret", transport=sip_t,
                                        channels=CHANNELS, page_size=1, units=h264_units, keepalive_s=0.1,
                                        frame_interval_s=1 / 30))
    try:
        with Running(cfg) as run:
            emu.call(emu.emu.start)
            assert emu.call(emu.emu.register) == 200
            emu.call(emu.emu.start_keepalives)
            run.wait_for(lambda: run.health("gbcam").state == "online" and run.health("gbcam").fps > 0, 10,
                         "GB camera online")
            gb = run.agent.stats()["gb28181"]
            assert gb["devices"][GB_DEVICE] == {"online": True, "reason": "", "channels": 2}
            assert emu.emu.invites >= 1 and emu.emu.catalog_pages_sent == 2
            decoded = run.agent.stats()["cameras"]["gbcam"]["decoded"]
            run.wait_for(lambda: run.agent.stats()["cameras"]["gbcam"]["decoded"] >= decoded + 10, 5,
                         "decoded frames growing")
            fps = run.health("gbcam").fps
            run.wait_for(lambda: run.agent.stats()["cameras"]["gbcam"]["detect_frames"] > 0, 5, "detector runs")
            assert not run.offline_events("gbcam", "start")

            emu.call(emu.emu.stop_keepalives)
            t_silent, t0 = datetime.now(UTC), time.monotonic()
            run.wait_for(lambda: run.health("gbcam").state == "offline", 5, "GB camera offline")
            offline_after = time.monotonic() - t0  # 3 missed keepalive intervals (1.5 s) + watchdog tick
            assert 1.0 < offline_after < 3.5, offline_after
            assert "keepalive timeout" in run.health("gbcam").error
            run.wait_for(lambda: run.offline_events("gbcam", "start"), 5, "camera_offline event")
            [start] = run.offline_events("gbcam", "start")
            assert start.started_at >= t_silent and start.level == "critical"
            assert start.id in {e.id for e in run.outbox.recent_events(20)}
            assert run.agent.stats()["gb28181"]["devices"][GB_DEVICE]["online"] is False

            emu.call(emu.emu.start_keepalives)  # the device is heard again: the camera comes back
            run.wait_for(lambda: run.offline_events("gbcam", "end"), 10, "camera_offline end")
            assert run.offline_events("gbcam", "end")[0].id == start.id
            assert run.health("gbcam").state == "online"
            invites = emu.emu.invites
        byes = emu.emu.byes_received
    finally:
        emu.close()
    assert invites >= 2 and byes >= 1  # a new INVITE after the outage; the agent said BYE on stop
    assert 10 < fps < 60


def test_gb_device_never_registers_other_cameras_unaffected(tmp_path, monkeypatch):
    """A GB camera whose device never registers is offline with a clear error; a file camera runs on."""
    monkeypatch.setenv(PW_ENV, "gb-secret")
    cfg = gb_agent_config(tmp_path, [
        gb_camera("ghost", "64050200001310000099", device="64050200001320000099", offline_after_s=1.0),
        {"id": "file", "source": {"type": "file", "url": str(clip_path())}, "offline_after_s": 1.0},
    ])
    with Running(cfg) as run:
        run.wait_for(lambda: run.offline_events("ghost", "start"), 10, "camera_offline for the ghost")
        run.wait_for(lambda: run.health("file").state == "online", 10, "file camera online")
        decoded = run.agent.stats()["cameras"]["file"]["decoded"]
        run.wait_for(lambda: run.agent.stats()["cameras"]["file"]["decoded"] >= decoded + 10, 5, "file frames")
        ghost, file_ = run.health("ghost"), run.health("file")
        stored = {(e.camera_id, e.type) for e in run.outbox.recent_events(20)}
    assert ghost.state == "offline" and ghost.fps == 0 and ghost.reconnects >= 1
    assert "GB device 64050200001320000099 has not registered with this box" in ghost.error
    assert file_.fps > 0
    assert ("ghost", "camera_offline") in stored and ("file", "camera_offline") not in stored
    assert not run.offline_events("file", "start")


def test_gb_sip_port_taken_needs_human_not_a_crash(tmp_path, monkeypatch):
    """The SIP port in use: the agent runs on and the GB camera's health says why it cannot stream."""
    import socket

    monkeypatch.setenv(PW_ENV, "gb-secret")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        cfg = gb_agent_config(tmp_path, [gb_camera("gbcam", CHANNELS[0].device_id)], port=taken.getsockname()[1])
        run = Running(cfg)
        run.thread.start()
        try:
            run.wait_for(lambda: run.agent.cameras and run.health("gbcam").error, 10, "GB camera error")
            err = run.health("gbcam").error
        finally:
            run.__exit__()
    assert err.startswith("needs human: GB/T 28181 SIP server cannot listen on 127.0.0.1:")
    assert run.agent.stats()["gb28181"]["running"] is False


def test_gb_source_without_enabled_server_needs_human(tmp_path):
    """A gb28181 camera while gb28181.enabled is false is refused with a message naming the key."""
    cfg = AgentConfig.model_validate({"device": {"id": DEVICE}, "cameras": [gb_camera("gbcam", CHANNELS[0].device_id)]})
    with pytest.raises(NeedsHuman, match="gb28181.enabled: true"):
        open_source(cfg.cameras[0])


def test_gb_refused_password_and_unknown_channel_are_explained(h264_units, tmp_path, monkeypatch):
    """Wrong device password → `needs human: … registration refused`; a channel missing from the catalog is named."""
    monkeypatch.setenv(PW_ENV, "gb-secret")
    bad_device = "64050200001320000008"
    cfg = gb_agent_config(tmp_path, [
        gb_camera("refused", "64050200001310000081", device=bad_device),
        gb_camera("nochan", "64050200001310000077"),
        gb_camera("good", CHANNELS[0].device_id),
    ])
    good = EmulatorThread(EmulatorConfig("127.0.0.1", cfg.gb28181.port, GB_DEVICE, "gb-secret", channels=CHANNELS,
                                         units=h264_units, keepalive_s=0.1, frame_interval_s=1 / 30))
    bad = EmulatorThread(EmulatorConfig("127.0.0.1", cfg.gb28181.port, bad_device, "not-the-password"))
    try:
        with Running(cfg) as run:
            for emu in (good, bad):
                emu.call(emu.emu.start)
            assert bad.call(bad.emu.register) == 403
            assert good.call(good.emu.register) == 200
            good.call(good.emu.start_keepalives)
            run.wait_for(lambda: run.health("good").state == "online"
                         and "catalog (2 channels" in run.health("nochan").error
                         and run.health("refused").error.startswith("needs human"), 10, "errors explained")
            refused, nochan = run.health("refused"), run.health("nochan")
    finally:
        good.close()
        bad.close()
    assert f"GB device {bad_device}: registration refused (wrong password)" in refused.error
    assert refused.state == "offline"
    assert nochan.error == (f"GB channel 64050200001310000077 is not in device {GB_DEVICE}'s catalog "
                            f"(2 channels: {CHANNELS[0].device_id}, {CHANNELS[1].device_id})")


def gb_slow_retry_camera(cam_id: str, channel: str, backoff_s: float, **kw) -> dict:
    """A GB camera whose reconnect back-off alone would keep it offline for `backoff_s`."""
    return gb_camera(cam_id, channel, reconnect_min_s=backoff_s, reconnect_max_s=backoff_s, **kw)


def test_gb_device_back_wakes_camera_out_of_long_backoff(h264_units, tmp_path, monkeypatch):
    """Back-off 30 s: the device registering, then resuming keepalives, brings the camera online in seconds."""
    backoff = 30.0
    monkeypatch.setenv(PW_ENV, "gb-secret")
    cfg = gb_agent_config(tmp_path, [gb_slow_retry_camera("gbcam", CHANNELS[0].device_id, backoff)])
    emu = EmulatorThread(EmulatorConfig("127.0.0.1", cfg.gb28181.port, GB_DEVICE, "gb-secret", channels=CHANNELS,
                                        units=h264_units, keepalive_s=0.1, frame_interval_s=1 / 30))
    try:
        with Running(cfg) as run:
            # the first attempt fails (not registered) and the camera sits in a 30 s back-off
            run.wait_for(lambda: "has not registered" in run.health("gbcam").error, 5, "first attempt failed")
            emu.call(emu.emu.start)
            t0 = time.monotonic()
            assert emu.call(emu.emu.register) == 200
            emu.call(emu.emu.start_keepalives)
            run.wait_for(lambda: run.health("gbcam").state == "online", 8, "online after registration")
            first_online = time.monotonic() - t0

            before = len(run.offline_events("gbcam", "start"))  # one may exist from the start-up outage
            emu.call(emu.emu.stop_keepalives)
            run.wait_for(lambda: len(run.offline_events("gbcam", "start")) > before, 8, "camera_offline event")
            start = run.offline_events("gbcam", "start")[-1]
            assert "keepalive timeout" in run.health("gbcam").error
            t1 = time.monotonic()
            emu.call(emu.emu.start_keepalives)  # heard again: device_online → wake
            run.wait_for(lambda: run.health("gbcam").state == "online", 8, "online after keepalives resume")
            back_online = time.monotonic() - t1
            run.wait_for(lambda: start.id in {e.id for e in run.offline_events("gbcam", "end")}, 5,
                         "camera_offline end")
            end = next(e for e in run.offline_events("gbcam", "end") if e.id == start.id)
            reader = run.agent.cameras["gbcam"].worker.reader
            wakes = reader.wakes
    finally:
        emu.close()
    print(f"GB wake: online {first_online:.2f} s after registration, {back_online:.2f} s after keepalives resumed "
          f"(back-off {backoff} s)")
    assert end.ended_at is not None and end.ended_at >= start.started_at
    assert first_online < 5 and back_online < 5, (first_online, back_online)
    assert wakes >= 2


def test_gb_fixed_password_wakes_refused_camera(h264_units, tmp_path, monkeypatch):
    """A refused device (needs human, back-off 30 s) streams within seconds once it registers with the right password."""
    monkeypatch.setenv(PW_ENV, "gb-secret")
    cfg = gb_agent_config(tmp_path, [gb_slow_retry_camera("gbcam", CHANNELS[0].device_id, 30.0)])
    emu = EmulatorThread(EmulatorConfig("127.0.0.1", cfg.gb28181.port, GB_DEVICE, "wrong", channels=CHANNELS,
                                        units=h264_units, keepalive_s=0.1, frame_interval_s=1 / 30))
    try:
        with Running(cfg) as run:
            emu.call(emu.emu.start)
            assert emu.call(emu.emu.register) == 403
            run.wait_for(lambda: run.health("gbcam").error.startswith("needs human"), 5, "refused explained")
            t0 = time.monotonic()
            assert emu.call(lambda: emu.emu.register(password="gb-secret")) == 200
            emu.call(emu.emu.start_keepalives)
            run.wait_for(lambda: run.health("gbcam").state == "online", 8, "online after the password is fixed")
            fixed_online = time.monotonic() - t0
    finally:
        emu.close()
    print(f"GB wake: online {fixed_online:.2f} s after the password was fixed (back-off 30 s)")
    assert fixed_online < 5


def test_gb_lost_catalog_answer_camera_online_after_one_requery(h264_units, tmp_path, monkeypatch):
    """The device drops its first Catalog answer: the re-query's catalog wakes the camera (back-off 30 s) at once."""
    monkeypatch.setenv(PW_ENV, "gb-secret")
    interval = 1.0
    cfg = gb_agent_config(tmp_path, [gb_slow_retry_camera("gbcam", CHANNELS[0].device_id, 30.0)],
                          catalog_retry_s=interval)
    emu = EmulatorThread(EmulatorConfig("127.0.0.1", cfg.gb28181.port, GB_DEVICE, "gb-secret", channels=CHANNELS,
                                        units=h264_units, keepalive_s=0.1, frame_interval_s=1 / 30,
                                        drop_catalog_answers=1))
    try:
        with Running(cfg) as run:
            emu.call(emu.emu.start)
            t0 = time.monotonic()
            assert emu.call(emu.emu.register) == 200
            emu.call(emu.emu.start_keepalives)
            run.wait_for(lambda: run.health("gbcam").state == "online", interval + 4, "online after the re-query")
            online = time.monotonic() - t0
            queries = len(emu.emu.catalog_queries)
    finally:
        emu.close()
    print(f"GB lost catalog answer: camera online {online:.2f} s after REGISTER (catalog_retry_s {interval})")
    assert queries == 2 and interval <= online < interval + 1.5, (queries, online)


def failing_reader(min_s: float, max_s: float) -> tuple[StreamReader, list[float]]:
    """A StreamReader whose every attempt fails; the list gets the monotonic time of each attempt."""
    attempts: list[float] = []

    def make_source():
        attempts.append(time.monotonic())
        raise RetryLater("camera unreachable")

    return StreamReader("unit/main", make_source, lambda _f: None, reconnect_min_s=min_s,
                        reconnect_max_s=max_s), attempts


def test_stream_reader_wake_cuts_backoff_and_resets_it():
    """wake() ends a 10 s back-off at once and restarts it from reconnect_min_s; stop ends the thread within 1 s."""
    reader, attempts = failing_reader(10.0, 60.0)
    stop = threading.Event()
    t = threading.Thread(target=reader.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert wait_until(lambda: reader.next_delay_s == 10.0, 2), reader.next_delay_s
        reader.wake()
        assert wait_until(lambda: len(attempts) == 2, 1.0), "wake did not end the back-off"
        assert attempts[1] - attempts[0] < 1.0
        # without the reset the second failure would plan min_s * 2 = 20 s
        assert wait_until(lambda: reader.next_delay_s == 10.0 and reader.reconnects == 1, 1.0, step=0.01)
        assert reader.wakes == 1 and reader.state() == "offline" and reader.error == "camera unreachable"
        t0 = time.monotonic()
        stop.set()
        t.join(1.0)
        stopped_in = time.monotonic() - t0
    finally:
        stop.set()
    assert not t.is_alive() and stopped_in < 1.0, stopped_in
    assert len(attempts) == 2  # joined: without a wake it waited out its 10 s back-off until stop


def test_stream_reader_stop_still_prompt_and_wake_after_stop_harmless():
    """A reader in a 30 s back-off stops within 1 s of stop; a wake() after stop starts no attempt."""
    reader, attempts = failing_reader(30.0, 30.0)
    stop = threading.Event()
    t = threading.Thread(target=reader.run, args=(stop,), daemon=True)
    t.start()
    assert wait_until(lambda: reader.next_delay_s == 30.0, 2, step=0.01)
    t0 = time.monotonic()
    stop.set()
    reader.wake()
    t.join(1.0)
    assert not t.is_alive() and time.monotonic() - t0 < 1.0
    assert len(attempts) == 1 and reader.wakes == 0 and not reader.connected
