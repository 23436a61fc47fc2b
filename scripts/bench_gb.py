#!/usr/bin/env python3
"""GB/T 28181 online/offline timings, measured with the project's device emulator on 127.0.0.1.

1. SIP server (`GbSipServer` and the emulator on one loop, no agent), per SIP transport:
   REGISTER → channel online (the `catalog` event); keepalives stop → `device_offline`; with the
   first Catalog answer lost, REGISTER → channel online (one `catalog_retry_s` later); 10
   wrong-password REGISTERs → events raised, seconds, and then the device closing its TCP media
   connection → the session ended (`GbChannelSource` raises), for TCP passive and active.
2. Agent (real detector, uplink off, 176x144 clip at 30 fps), per SIP / media transport:
   REGISTER → camera online; keepalives stop → camera offline and → `camera_offline` event.

    python scripts/bench_gb.py [--rounds 5] [--keepalive 0.5] [--catalog-retry 1.0] [--skip-agent]

Prints the CPU model and the median (min–max) of each figure over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.gb_device_emulator import DEVICE, EmulatorConfig, GbDeviceEmulator, gb_config, load_h264_units  # noqa: E402

from devkit.localbroker import free_port  # noqa: E402
from edge_agent.capture.gb28181 import GbChannelSource, GbEvent, GbSipServer  # noqa: E402
from edge_agent.capture.gb28181.manscdp import CatalogItem  # noqa: E402
from edge_agent.errors import RetryLater  # noqa: E402

CHANNELS = [CatalogItem(f"6405020000131000000{i}", name=f"后厨摄像头{i}", status="ON") for i in range(1, 3)]
PW_ENV = "BK_TEST_GB_DEV_PW"
PASSWORD = "bench-secret"


def cpu_model() -> str:
    m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    return f"{m.group(1) if m else '?'} ({len(os.sched_getaffinity(0))} cores usable)"


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s ({min(values):.3f}–{max(values):.3f})"


async def until(pred: Callable[[], object], timeout: float, what: str) -> float:
    """Loop time at which `pred` first held (polled every 2 ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.002)
    return loop.time()


# --- 1. SIP server ---------------------------------------------------------------------------------

async def server_round(sip_t: str, keepalive_s: float, catalog_retry_s: float, drop: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    at: dict[str, float] = {}

    def on_event(ev: GbEvent) -> None:
        at.setdefault(ev.kind, loop.time())

    server = GbSipServer(gb_config(keepalive_timeout_s=keepalive_s, catalog_retry_s=catalog_retry_s,
                                   catalog_retry_max_s=catalog_retry_s * 8), on_event=on_event)
    await server.start()
    emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, DEVICE, PASSWORD, transport=sip_t,
                                          channels=CHANNELS, keepalive_s=keepalive_s / 5, drop_catalog_answers=drop))
    try:
        await emu.start()
        t0 = loop.time()
        assert await emu.register() == 200
        emu.start_keepalives()
        await until(lambda: "catalog" in at, catalog_retry_s * 3 + 5, "catalog")
        out = {"online": at["catalog"] - t0}
        if not drop:
            emu.stop_keepalives()
            t1 = loop.time()
            await until(lambda: "device_offline" in at, keepalive_s * 6 + 3, "device_offline")
            out["offline"] = at["device_offline"] - t1
        return out
    finally:
        await emu.stop()
        await server.stop()


async def throttle_round(sip_t: str) -> dict[str, float]:
    events: list[GbEvent] = []
    server = GbSipServer(gb_config(), on_event=events.append)
    await server.start()
    emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, DEVICE, PASSWORD, transport=sip_t))
    try:
        await emu.start()
        t0 = time.monotonic()
        statuses = [await emu.register(password="wrong") for _ in range(10)]
        assert statuses == [403] * 10, statuses
        return {"seconds": time.monotonic() - t0, "events": float(len(events))}
    finally:
        await emu.stop()
        await server.stop()


async def tcp_close_round(media_t: str, units: list[bytes]) -> float:
    server = GbSipServer(gb_config())
    await server.start()
    emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", server.port, DEVICE, PASSWORD, channels=CHANNELS,
                                          units=units, bye_after_clip=False,
                                          tcp_framing="4571" if media_t == "tcp_passive" else "interleaved"))
    try:
        await emu.start()
        assert await emu.register() == 200
        emu.start_keepalives()
        await until(lambda: server.channels(), 5, "catalog")
        source = GbChannelSource(server, CHANNELS[0].device_id, transport=media_t, media_timeout_s=10)

        def consume() -> float:
            try:
                for _ in source.frames(threading.Event()):
                    pass
            except RetryLater:
                assert emu.media_closed_at is not None
                return time.monotonic() - emu.media_closed_at
            raise RuntimeError("the session did not end")

        return await asyncio.to_thread(consume)
    finally:
        await emu.stop()
        await server.stop()


async def bench_server(args: argparse.Namespace, units: list[bytes]) -> None:
    print(f"\n1. SIP server (keepalive_timeout_s {args.keepalive}, catalog_retry_s {args.catalog_retry}, "
          f"{args.rounds} rounds, median (min–max))")
    for sip_t in ("udp", "tcp"):
        plain = [await server_round(sip_t, args.keepalive, args.catalog_retry, 0) for _ in range(args.rounds)]
        lost = [await server_round(sip_t, args.keepalive, args.catalog_retry, 1) for _ in range(args.rounds)]
        burst = [await throttle_round(sip_t) for _ in range(args.rounds)]
        print(f"  SIP {sip_t.upper()}: REGISTER → channel online {spread([r['online'] for r in plain])}; "
              f"keepalives stop → device_offline {spread([r['offline'] for r in plain])}")
        print(f"  SIP {sip_t.upper()}: first Catalog answer lost → channel online {spread([r['online'] for r in lost])}")
        print(f"  SIP {sip_t.upper()}: 10 wrong-password REGISTERs in {spread([r['seconds'] for r in burst])}, "
              f"events per burst {statistics.median(r['events'] for r in burst):g}")
    for media_t in ("tcp_passive", "tcp_active"):
        ended = [await tcp_close_round(media_t, units) for _ in range(args.rounds)]
        print(f"  {media_t}: device closes the TCP media connection → session ended {spread(ended)} "
              "(media_timeout_s 10)")


# --- 2. Agent ---------------------------------------------------------------------------------------

class EmulatorThread:
    """The emulator on its own loop thread, driven from the benchmark's thread."""

    def __init__(self, cfg: EmulatorConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-emulator", daemon=True)
        self.thread.start()
        self.emu = GbDeviceEmulator(cfg)

    def call(self, fn: Callable[[], object]) -> object:
        async def run() -> object:
            out = fn()
            return await out if asyncio.iscoroutine(out) else out
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def close(self) -> None:
        self.call(self.emu.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def wait(pred: Callable[[], object], timeout: float, what: str) -> float:
    """Monotonic time at which `pred` first held (polled every 5 ms)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)
    return time.monotonic()


def agent_round(sip_t: str, media_t: str, keepalive_s: float, units: list[bytes], db: Path) -> tuple[float, ...]:
    from bk_contract import Alert
    from edge_agent.app.agent import Agent, PipelineTuning
    from edge_agent.config import AgentConfig
    from edge_agent.outbox.store import Outbox

    gb_device = "64050200001320000007"
    cfg = AgentConfig.model_validate({
        "device": {"id": "64050200001180000001"}, "storage": {"path": str(db)}, "uplink": {"enabled": False},
        "gb28181": {"enabled": True, "host": "127.0.0.1", "port": free_port(udp_too=True),
                    "keepalive_timeout_s": keepalive_s, "media_port_range": (0, 0), "media_ip": "127.0.0.1",
                    "password_env": PW_ENV},
        "cameras": [{"id": "gbcam", "source": {"type": "gb28181", "gb_device_id": gb_device,
                                               "gb_channel_id": CHANNELS[0].device_id, "gb_media_transport": media_t},
                     "open_timeout_s": 3, "read_timeout_s": 3, "reconnect_min_s": 0.2, "reconnect_max_s": 0.5,
                     "offline_after_s": 2.0}]})
    alerts: list[Alert] = []
    outbox = Outbox(cfg.storage.path, device_id=cfg.device.id)
    agent = Agent(cfg, outbox=outbox, on_event=alerts.append, tuning=PipelineTuning(housekeeping_s=0.2))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), name="bench-agent")
    thread.start()
    emu = EmulatorThread(EmulatorConfig("127.0.0.1", cfg.gb28181.port, gb_device, PASSWORD, transport=sip_t,
                                        channels=CHANNELS, units=units * 5, keepalive_s=keepalive_s / 5,
                                        frame_interval_s=1 / 30))

    def state() -> str:
        return next((h.state for h in agent.health() if h.id == "gbcam"), "")

    try:
        wait(lambda: agent.gb is not None and agent.gb.running and state(), 20, "agent up")
        emu.call(emu.emu.start)
        t0 = time.monotonic()
        assert emu.call(emu.emu.register) == 200
        emu.call(emu.emu.start_keepalives)
        online = wait(lambda: state() == "online", 15, "camera online") - t0
        emu.call(emu.emu.stop_keepalives)
        t1 = time.monotonic()
        offline = wait(lambda: state() == "offline", 15, "camera offline") - t1
        event = wait(lambda: any(a.type == "camera_offline" and a.state == "start" for a in alerts), 15,
                     "camera_offline") - t1
        return online, offline, event
    finally:
        stop.set()
        thread.join(20)
        emu.close()
        outbox.close()


def bench_agent(args: argparse.Namespace, units: list[bytes], work: Path) -> None:
    print(f"\n2. Agent (keepalive_timeout_s {args.keepalive}, offline_after_s 2, {args.rounds} rounds)")
    for sip_t, media_t in (("udp", "udp"), ("tcp", "tcp_passive"), ("udp", "tcp_active")):
        rounds = [agent_round(sip_t, media_t, args.keepalive, units, work / f"agent-{sip_t}-{media_t}-{n}.db")
                  for n in range(args.rounds)]
        online, offline, event = ([r[i] for r in rounds] for i in range(3))
        print(f"  SIP {sip_t.upper()} / media {media_t}: REGISTER → camera online {spread(online)}; "
              f"keepalives stop → camera offline {spread(offline)}, → camera_offline {spread(event)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--keepalive", type=float, default=0.5, help="keepalive_timeout_s of the box")
    ap.add_argument("--catalog-retry", type=float, default=1.0, help="catalog_retry_s of the box")
    ap.add_argument("--skip-agent", action="store_true", help="only the SIP server figures")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    os.environ[PW_ENV] = PASSWORD
    print(f"CPU: {cpu_model()}; Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench-gb-") as tmp:
        work = Path(tmp)
        units = load_h264_units(work)
        asyncio.run(bench_server(args, units))
        if not args.skip_agent:
            bench_agent(args, units, work)


if __name__ == "__main__":
    main()
