#!/usr/bin/env python3
"""Live view against the 0.5 Mbit/s per camera: upstream bytes on the box's socket, alert latency with
live on and off, time to first frame, and the CPU of one live transcode beside plain `ffmpeg`.

    python scripts/bench_live.py                         # 60 s live off, then 180 s live on, ffmpeg 60 s
    python scripts/bench_live.py --live-s 300 --off-s 90 --alert-every-s 30

Everything runs on 127.0.0.1, the way a box runs:

- Mosquitto (devkit/localbroker.py) with dynamic security and a TLS listener (a throw-away CA); the
  box's account is provisioned like a real one, and the receiver (`cloud-receiver serve`, a
  subprocess) connects to the plain listener.
- The agent runs in a child process (this script with `--agent-child`): the real `Agent` on the 1080p
  carphone clip the tests use (tests/support/footage.py, paced at 25 fps and looped), recording on,
  one `phone_use` rule, upload budget at its default (500 kbit/s per camera). Its detector is a
  stand-in that shows a person holding a phone for `--alert-on-s` of every `--alert-every-s` seconds
  (so the rule fires on a schedule, with its snapshot and clip), and costs no CPU: the CPU figures
  are the decode, the rules, the outbox and the uplink, and the live transcode.
- The box connects over TLS to a counting TCP proxy in front of the broker's TLS port: every byte
  the box writes to its socket (MQTT and TLS framing, keepalives, acknowledgements) is counted per
  second. Reported: the largest sum over any 60 consecutive seconds (sliding, 1 s steps), in Mbit/s,
  against the 0.5 Mbit/s limit.
- Live on: a viewer opens the receiver's WebSocket (`/api/v1/live/{device}/{camera}`), as the
  console's player does; the relay sends `live_start` (and renews it). Time to first frame: from
  opening the socket to the first frame decoded (PyAV) from the pieces received.
- Alert latency: from the box's `on_event` (the alert exists) to the alert's row in the receiver's
  database (`received_at`), for every alert started in each phase.
- CPU: user + system seconds of the agent process per second of wall time, live off and live on; the
  difference is one live transcode (scale 1080p -> 640x360, libx264, fMP4, outbox, uplink). The
  limit beside it: `ffmpeg` doing the same transcode of the same clip (paced with -re, 12 fps,
  libx264 ultrafast/zerolatency, same rate control) minus `ffmpeg` only decoding the clip at the same
  pace: the agent decodes for detection whether or not anyone watches.

The proxy and the viewer are in scripts/bench_live_parts.py. Exit status 1 when a window passes the limit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "scripts", ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import bench_live_parts as parts  # noqa: E402
from bench_common import ReceiverProcess, cpu_seconds, fmt, percentile, print_table, provision, say  # noqa: E402
from bench_machine import cpu_line  # noqa: E402
from support.receiver_harness import make_tls_files  # noqa: E402

LIMIT_MBPS = 0.5
CLIP = "carphone_pristine.mp4"
PASSWORD_ENV = "BK_BENCH_DEVICE_PASSWORD"


# --- the agent, in a child process -------------------------------------------------------------

class ScheduledPhone:
    """A stand-in detector (a fake, named as such): a person holding a phone for `on_s` of every `every_s`
    seconds of wall time, nothing otherwise."""

    labels = ("person", "cell phone")

    def __init__(self, every_s: float, on_s: float) -> None:
        self.every_s, self.on_s = every_s, on_s

    def detect(self, rgb: Any) -> list[Any]:
        from edge_agent.analysis.types import Box, Detection
        if time.time() % self.every_s >= self.on_s:
            return []
        h, w = rgb.shape[:2]
        return [Detection("person", 0.9, Box(w * 0.3, h * 0.2, w * 0.6, h * 0.95)),
                Detection("cell phone", 0.8, Box(w * 0.42, h * 0.35, w * 0.48, h * 0.45))]


def agent_child(config_path: str, every_s: float, on_s: float) -> int:
    """Run the agent until stdin closes; one JSON line per alert started, stats at the end."""
    from edge_agent.app.agent import Agent, PipelineTuning
    from edge_agent.config import AgentConfig
    from edge_agent.outbox.store import Outbox

    cfg = AgentConfig.model_validate(json.loads(Path(config_path).read_text()))
    outbox = Outbox(cfg.storage.path, device_id=cfg.device.id)
    out_lock = threading.Lock()

    def emit(obj: dict[str, Any]) -> None:
        with out_lock:
            print("BENCH " + json.dumps(obj), flush=True)  # the agent's own logs share stdout

    def on_event(alert: Any) -> None:
        if alert.state == "start" and alert.type != "camera_offline":
            emit({"alert": alert.id, "t": time.time(), "depth": outbox.stats()["depth"]})

    agent = Agent(cfg, detector=ScheduledPhone(every_s, on_s), outbox=outbox, on_event=on_event,
                  tuning=PipelineTuning(housekeeping_s=0.5))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), name="agent")
    thread.start()
    emit({"ready": True, "pid": os.getpid()})

    def report_every_second() -> None:
        while not stop.wait(1.0):
            up, live = agent.uplink, agent.live.status() if agent.live else {}
            emit({"tick": time.monotonic(), "depth": outbox.stats()["depth"],
                  "spent": {int(k): v for k, v in up.budget.spent.items()} if up else {},
                  "encoded_bytes": sum(s["bitrate_bps"] * s["live_s"] / 8 for s in live.values()),
                  "live": live})

    threading.Thread(target=report_every_second, name="bench-ticks", daemon=True).start()
    sys.stdin.read()  # the parent closes our stdin to stop us
    up = agent.uplink
    stats = {"stats": True, "sent": up.health()["sent"] if up else {},
             "budget_spent": {k: v for k, v in (up.budget.spent.items() if up else [])},
             "live_sessions": agent.live.sessions_started if agent.live else 0,
             "outbox": outbox.stats()["depth"], "dropped": outbox.stats()["dropped"]}
    stop.set()
    thread.join(20)
    emit(stats)
    outbox.close()
    return 0


class AgentProcess:
    def __init__(self, config_path: Path, env: dict[str, str], every_s: float, on_s: float, log: Path) -> None:
        self.alerts: dict[str, float] = {}  # alert id -> wall time it was made on the box
        self.depth_at_alert: list[dict[str, int]] = []
        self.final: dict[str, Any] = {}
        self.ticks: list[dict[str, Any]] = []  # once a second: outbox depth, budget spent by class, live status
        self._ready = threading.Event()
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.every_s, self.on_s = every_s, on_s
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--agent-child", str(config_path), "--alert-every-s", str(every_s),
             "--alert-on-s", str(on_s)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=ROOT, text=True)  # noqa: SIM115
        self._reader = threading.Thread(target=self._read, name="bench-agent-stdout", daemon=True)
        self._reader.start()
        if not self._ready.wait(60):
            raise RuntimeError(f"the agent did not start; see {log}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.startswith("BENCH "):
                self._log.write(line)
                continue
            with contextlib.suppress(ValueError):
                msg = json.loads(line[6:])
                if "ready" in msg:
                    self._ready.set()
                elif "tick" in msg:
                    self.ticks.append(msg)
                elif "alert" in msg:
                    self.alerts[msg["alert"]] = msg["t"]
                    self.depth_at_alert.append(msg["depth"])
                elif "stats" in msg:
                    self.final = msg

    def cpu(self) -> float:
        value = cpu_seconds(self.proc.pid)
        assert value is not None, "the agent process is gone"
        return value

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(40)
        self._reader.join(5)
        self._log.close()


# --- phases ------------------------------------------------------------------------------------------

def wait_quiet(agent: AgentProcess, timeout: float) -> bool:
    """Wait until the box's outbox holds no alert, snapshot or clip message (True) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.ticks and not any(agent.ticks[-1]["depth"].get(k) for k in ("alert", "snapshot", "clip")) \
                and time.time() % agent.every_s > agent.on_s + 2:  # and the next alert is not about to start
            return True
        time.sleep(0.2)
    return False


def run(args: argparse.Namespace) -> dict[str, Any]:
    from support.footage import clip_1080p

    from devkit.localbroker import running_broker
    from edge_agent.config import UplinkConfig
    from edge_agent.live.encoder import LiveProfile, video_bitrate

    work = Path(tempfile.mkdtemp(prefix="bk-bench-live-"))
    clip = clip_1080p(CLIP)
    tls = make_tls_files(work / "tls")
    result: dict[str, Any] = {"cpu": cpu_line(), "clip": str(clip)}
    with running_broker(work / "broker", dynsec=True, tls_dir=tls) as broker, \
            parts.CountingProxy((broker.host, broker.tls_port)) as proxy:
        world = provision(broker, work / "receiver.db", 1)
        device, password = next(iter(world.devices.items()))
        rcfg = work / "receiver.yaml"
        from bench_common import write_receiver_config
        env = write_receiver_config(rcfg, broker, world.db, "warning")
        receiver = ReceiverProcess(rcfg, work / "receiver.log", env)
        receiver.start()
        budget = args.budget_kbps or UplinkConfig().budget_kbps_per_camera
        acfg = {
            "device": {"id": device}, "storage": {"path": str(work / "agent.db")},
            "motion": {"enabled": False},
            "uplink": {"enabled": True, "telemetry_s": 60, "budget_kbps_per_camera": budget,
                       "broker": {"host": "127.0.0.1", "port": proxy.port, "tls": True, "ca_file": str(tls / "ca.crt"),
                                  "username": device, "password_env": PASSWORD_ENV}},
            "cameras": [{"id": "cam1", "source": {"type": "file", "url": str(clip)},
                         "clip_pre_s": args.clip_s / 2, "clip_post_s": args.clip_s / 2,
                         "rules": [{"type": "phone_use", "persistence_s": 1.0, "cooldown_s": 0.0}]}],
        }
        (work / "agent.json").write_text(json.dumps(acfg))
        say(f"work dir {work}; agent over TLS via the counting proxy :{proxy.port} -> broker :{broker.tls_port}")
        agent = AgentProcess(work / "agent.json", {PASSWORD_ENV: password}, args.alert_every_s, args.alert_on_s,
                             work / "agent.log")
        try:
            t_start = time.monotonic()
            time.sleep(args.warmup_s)  # connect, first alert, the clip ring filled
            # phase 1: live off
            say(f"live off for {args.off_s:g} s")
            off = (time.monotonic(), time.time(), agent.cpu())
            time.sleep(args.off_s)
            off_end = (time.monotonic(), time.time(), agent.cpu())
            # phase 2: live on (a viewer on the receiver's WebSocket), opened when no alert media is waiting:
            # live comes after alerts, snapshots and clips in the budget, so during a clip's upload the first
            # frame waits for the clip (reported separately: the viewer's reconnects)
            quiet = wait_quiet(agent, args.alert_every_s + 120)
            say(f"live on for {args.live_s:g} s")
            viewer = parts.Viewer(receiver.api_url, world.token, device, "cam1").start()
            deadline = time.monotonic() + 60
            while viewer.first_frame is None and time.monotonic() < deadline:
                time.sleep(0.01)
            ttff = (viewer.first_frame - viewer.opened) if viewer.first_frame else None
            second = parts.Viewer(receiver.api_url, world.token, device, "cam1").start()
            while second.first_frame is None and time.monotonic() < deadline + 10:
                time.sleep(0.01)
            ttff2 = (second.first_frame - second.opened) if second.first_frame else None
            second.close()
            time.sleep(args.settle_s)
            on = (time.monotonic(), time.time(), agent.cpu())
            time.sleep(args.live_s)
            on_end = (time.monotonic(), time.time(), agent.cpu())
            viewer.close()
            parts.wait_alerts_in(world.db, agent.alerts, off[1], on_end[1], 60)
            t_end = time.monotonic()
        finally:
            agent.stop()
            receiver.stop()
        live_per_s = proxy.seconds(on[0], on_end[0])
        all_per_s = proxy.seconds(t_start, t_end)
        windows_live = parts.window_sums(live_per_s)
        windows_all = parts.window_sums(all_per_s)
        lat_off, lost_off = parts.alert_latencies(world.db, agent.alerts, off[1], off_end[1])
        lat_on, lost_on = parts.alert_latencies(world.db, agent.alerts, off_end[1], on_end[1])
        cpu_off = (off_end[2] - off[2]) / (off_end[0] - off[0])
        cpu_on = (on_end[2] - on[2]) / (on_end[0] - on[0])
        result.update({
            "work": str(work), "viewer_errors": viewer.errors, "viewer_connects": viewer.connects,
            "viewer_bytes": viewer.bytes, "quiet_at_open": quiet,
            "phase_on": parts.phase_stats(agent.ticks, on[0], on_end[0]), "phase_off": parts.phase_stats(agent.ticks, off[0], off_end[0]),
            "ttff_s": ttff, "ttff_second_s": ttff2,
            "live_mean_mbps": parts.mbps(sum(live_per_s), len(live_per_s)),
            "off_mean_mbps": parts.mbps(sum(proxy.seconds(off[0], off_end[0])), off_end[0] - off[0]),
            "max_window_live_mbps": parts.mbps(max(windows_live), parts.WINDOW_S) if windows_live else None,
            "max_window_all_mbps": parts.mbps(max(windows_all), parts.WINDOW_S) if windows_all else None,
            "windows_live": len(windows_live),
            "minutes_live": [parts.mbps(sum(live_per_s[i:i + parts.WINDOW_S]), parts.WINDOW_S)
                             for i in range(0, len(live_per_s) - parts.WINDOW_S + 1, parts.WINDOW_S)],
            "lat_off": lat_off, "lat_on": lat_on, "lost_off": lost_off, "lost_on": lost_on,
            "cpu_off": cpu_off, "cpu_on": cpu_on, "proxy_connections": proxy.connections,
            "agent_final": agent.final, "socket_up_total": sum(proxy.up.values()), "live_depth_at_alerts": [d.get("live", 0) for d in agent.depth_at_alert],
        })
    if not args.keep:  # the 1080p recordings and the media: hundreds of MB a run; the logs stay
        for big in ("recordings", "media", "agent.db", "receiver.db"):
            path = work / big
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    profile = LiveProfile(bitrate_bps=max(64_000, min(400_000, int(budget * 1000 * 0.8))))
    say(f"ffmpeg: decode only, then the live transcode, {args.ffmpeg_s:g} s each")
    video_bps = video_bitrate(profile.bitrate_bps, profile.fps, profile.gop_s)  # the H.264 rate our encoder uses
    result["ffmpeg_decode"] = parts.ffmpeg_cpu(clip, args.ffmpeg_s, transcode=False, bitrate=video_bps, fps=profile.fps)
    result["ffmpeg_transcode"] = parts.ffmpeg_cpu(clip, args.ffmpeg_s, transcode=True, bitrate=video_bps, fps=profile.fps)
    result["profile"] = profile
    result["budget_kbps"] = budget
    return result


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:,.0f} ms"

    def lat(xs: list[float]) -> list[Any]:
        return [len(xs), ms(statistics.median(xs)) if xs else "-", ms(percentile(xs, 95)), ms(max(xs) if xs else None)]

    p = r["profile"]
    print(f"\n{r['cpu']}")
    print(f"clip: {r['clip']} (1920x1080 25 fps, looped, paced); live: {p.width}x{p.height} {p.fps:g} fps "
          f"libx264 at {p.bitrate_bps / 1000:g} kbit/s; upload budget {r['budget_kbps']:g} kbit/s; agent over TLS; alerts: {args.alert_on_s:g} s of every "
          f"{args.alert_every_s:g} s, clip {args.clip_s:g} s of 1080p each")
    print(f"\nupstream on the box's socket (MQTT + TLS framing), limit {LIMIT_MBPS} Mbit/s per camera:")
    print_table(["", "Mbit/s", "vs limit"], [
        [f"max over every {parts.WINDOW_S} s window, live on ({r['windows_live']} windows)", f"{r['max_window_live_mbps']:.3f}",
         f"{r['max_window_live_mbps'] / LIMIT_MBPS:.2f}x" if r["max_window_live_mbps"] else "-"],
        [f"max over every {parts.WINDOW_S} s window, whole run", f"{r['max_window_all_mbps']:.3f}",
         f"{r['max_window_all_mbps'] / LIMIT_MBPS:.2f}x" if r["max_window_all_mbps"] else "-"],
        ["mean, live on", f"{r['live_mean_mbps']:.3f}", ""],
        ["mean, live off (alerts only)", f"{r['off_mean_mbps']:.3f}", ""],
    ])
    print("  per whole minute, live on: " + ", ".join(f"{m:.3f}" for m in r["minutes_live"]))
    print("\nalert latency (box makes the alert -> receiver's row):")
    print_table(["", "alerts", "median", "p95", "max"], [["live off", *lat(r["lat_off"])], ["live on", *lat(r["lat_on"])]])
    if r["lost_off"] or r["lost_on"]:
        print(f"  NOT ARRIVED: {r['lost_off']} (live off), {r['lost_on']} (live on)")
    depth = r["live_depth_at_alerts"]
    if depth:
        print(f"  live pieces waiting in the outbox when an alert was made (live on): max {max(depth)}; "
              "alerts go first (outbox order: priority, then age)")
    print(f"\ntime to first frame (WebSocket opened -> first frame decoded): first viewer {ms(r['ttff_s'])} "
          f"(the box starts encoding), second viewer {ms(r['ttff_second_s'])}"
          + ("" if r["quiet_at_open"] else " (an alert clip was still uploading when it opened)"))
    print(f"  the live viewer connected {r['viewer_connects']} time(s); relay timeouts (no video within 20 s, "
          f"pieces waiting behind alert clips): {len(r['viewer_errors'])}")
    on = r["phase_on"]
    print("\nlive on, by class of the budget (MQTT bytes, kbit/s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in on["kbps_by_class"].items())
          + f"; encoder output {on['encoded_kbps']:.0f} kbit/s; live pieces waiting in the outbox: max "
          f"{on['live_depth_max']} (= {on['live_depth_max'] / 13:.0f} s of video at 12 fps + init)")
    sent_live = on["kbps_by_class"].get("live", 0.0)
    if on["encoded_kbps"] and on["live_depth_max"] < 13 and sent_live > on["encoded_kbps"] * 1.05:
        print(f"  the uplink sent {sent_live:.0f} kbit/s of live for {on['encoded_kbps']:.0f} encoded, with no backlog: "
              "live pieces published more than once (docs/performance.md#live-socket-bench)")
    live_cost = r["cpu_on"] - r["cpu_off"]
    ff = r["ffmpeg_transcode"] - r["ffmpeg_decode"]
    print("\nCPU seconds per second (2 cores = 2.0):")
    print_table(["", "ours (agent)", "ffmpeg"], [
        ["decode 1080p (+ rules, outbox, uplink for ours)", f"{r['cpu_off']:.3f}", f"{r['ffmpeg_decode']:.3f}"],
        ["decode + live transcode", f"{r['cpu_on']:.3f}", f"{r['ffmpeg_transcode']:.3f}"],
        ["one live transcode (difference)", f"{live_cost:.3f}", f"{ff:.3f}"],
    ])
    print(f"  ours / ffmpeg for one live transcode: {fmt(live_cost / ff if ff > 0 else None, 2)}")
    fin = r["agent_final"]
    if fin and fin.get("budget_spent"):
        spent = sum(fin["budget_spent"].values())
        print(f"\nbytes on the socket / bytes the upload budget counted (MQTT packets): "
              f"{r['socket_up_total']:,} / {spent:,} = {r['socket_up_total'] / spent:.4f} "
              "(TLS records, keepalives and acknowledgements are outside the budget)")
    if fin:
        print(f"\nbox: sent by class {fin.get('sent')}; budget bytes by priority {fin.get('budget_spent')}; "
              f"outbox left {fin.get('outbox')}; dropped {fin.get('dropped')}; live sessions {fin.get('live_sessions')}")
    print(f"work dir: {r['work']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--live-s", type=float, default=180.0, help="seconds measured with live on (>= 60; default 180)")
    ap.add_argument("--off-s", type=float, default=60.0, help="seconds measured with live off")
    ap.add_argument("--warmup-s", type=float, default=15.0, help="seconds before measuring (connect, rings filled)")
    ap.add_argument("--settle-s", type=float, default=5.0, help="seconds after live starts before measuring")
    ap.add_argument("--alert-every-s", type=float, default=60.0, help="a phone appears once every this many seconds")
    ap.add_argument("--alert-on-s", type=float, default=4.0, help="... and stays this long")
    ap.add_argument("--clip-s", type=float, default=2.0, help="alert clip length (half before, half after; at least 2)")
    ap.add_argument("--budget-kbps", type=float, default=None,
                    help="the box's uplink.budget_kbps_per_camera (default: the config's default)")
    ap.add_argument("--ffmpeg-s", type=float, default=60.0, help="seconds of each ffmpeg run")
    ap.add_argument("--keep", action="store_true", help="keep the recordings and databases in the work dir")
    ap.add_argument("--agent-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.agent_child:
        return agent_child(args.agent_child, args.alert_every_s, args.alert_on_s)
    if args.live_s < parts.WINDOW_S:
        ap.error(f"--live-s must be at least {parts.WINDOW_S} (one window)")
    r = run(args)
    report(r, args)
    over = r["max_window_all_mbps"] is not None and r["max_window_all_mbps"] > LIMIT_MBPS
    return 1 if over else 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
