"""The ONVIF end-to-end scenario, run INSIDE a private network namespace (see tests/support/netns.py).

Starts ipycam (a real virtual ONVIF camera: WS-Discovery, SOAP device/media services with
WS-UsernameToken auth, its own RTSP server fed by ffmpeg), then exercises our probe, client,
the `discover` command and PyAV streaming against it, and returns JSON-able facts for the
pytest test to assert on. Never run this on the host network: it multicasts.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD, PASSWORD_ENV = "installer", "kitchen-Secret-9", "BK_TEST_CAM_PASSWORD"
ONVIF_PORT, RTSP_PORT = 18080, 18554
MAIN_SIZE, SUB_SIZE = (640, 360), (320, 180)
BASE_CONFIG = """\
# Agent config of the test kitchen (this comment must survive discover)
device:
  id: "64050200001180000001"   # GB/T 28181 code of the box
  name: 测试食堂

cameras:
  # this camera was typed by hand and must be kept
  - id: hand-made
    name: 手工添加
    source:
      type: rtsp
      url: rtsp://127.0.0.1:9554/hand

status_port: 0   # trailing comment kept
"""


def start_camera(name: str = "Kitchen Cam") -> tuple[Any, threading.Event]:
    """Start ipycam with credentials and a frame feeder thread; returns (camera, stop event)."""
    from ipycam import CameraConfig, IPCamera

    cfg = CameraConfig(
        name=name, main_width=MAIN_SIZE[0], main_height=MAIN_SIZE[1], main_fps=10,
        sub_width=SUB_SIZE[0], sub_height=SUB_SIZE[1], sub_fps=10, main_bitrate="1M", sub_bitrate="256K",
        username=USER, password=PASSWORD, onvif_port=ONVIF_PORT, rtsp_port=RTSP_PORT,
        hw_accel="cpu", show_timestamp=False, local_ip="127.0.0.1",
    )
    cam = IPCamera(cfg)
    if not cam.start():
        raise RuntimeError("ipycam did not start")
    stop = threading.Event()

    def feed() -> None:
        i = 0
        frame = np.zeros((MAIN_SIZE[1], MAIN_SIZE[0], 3), np.uint8)
        while not stop.is_set():
            frame[:, :, :] = (i * 7) % 255
            frame[:40, (i * 8) % (MAIN_SIZE[0] - 40):][:, :40] = 255  # a moving block
            cam.stream(frame)  # paces itself to main_fps
            i += 1

    threading.Thread(target=feed, name="ipycam-feed", daemon=True).start()
    return cam, stop


def decode_frames(uri: str, count: int = 10, timeout_s: float = 20.0) -> dict[str, Any]:
    """Open an RTSP URI with PyAV (TCP) and decode `count` frames; return sizes and timing."""
    import av

    t0 = time.monotonic()
    container = av.open(uri, options={"rtsp_transport": "tcp"}, timeout=timeout_s)
    sizes = set()
    n = 0
    try:
        for frame in container.decode(video=0):
            sizes.add((frame.width, frame.height))
            n += 1
            if n >= count or time.monotonic() - t0 > timeout_s:
                break
    finally:
        container.close()
    return {"frames": n, "sizes": sorted(sizes), "seconds": round(time.monotonic() - t0, 2)}


def _discover_cli(args: list[str], password: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **{PASSWORD_ENV: password})
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.app.cli", "discover", *args],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )


def _config_check(path: Path) -> dict[str, Any]:
    """`edge-agent config check` on the written config (the camera password set, as at run time).

    No fallback: a check that fails (or a CLI without the command) is reported as failed, with
    what it printed, so the test sees it.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.app.cli", "config", "check", str(path)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), **{PASSWORD_ENV: PASSWORD}),  # as at run time
    )
    return {"ok": proc.returncode == 0, "rc": proc.returncode, "stdout": proc.stdout[-2000:],
            "stderr": proc.stderr[-2000:]}


def run(workdir: str) -> dict[str, Any]:
    from edge_agent.errors import AuthFailed
    from edge_agent.onvif.client import fetch_device
    from edge_agent.onvif.discovery import probe

    work = Path(workdir)
    out: dict[str, Any] = {}
    cam, stop = start_camera()
    try:
        out["streaming_mode"] = cam.streaming_mode
        t0 = time.monotonic()
        matches = probe(timeout=1.5)
        out["probe_seconds"] = round(time.monotonic() - t0, 2)
        out["probe"] = [
            {"endpoint": m.endpoint, "xaddrs": list(m.xaddrs), "name": m.scopes.name, "responder": m.responder}
            for m in matches
        ]
        t0 = time.monotonic()
        dev = asyncio.run(fetch_device("127.0.0.1", ONVIF_PORT, USER, PASSWORD, timeout=15))
        out["fetch_seconds"] = round(time.monotonic() - t0, 2)
        out["device"] = {
            "model": dev.info.model, "manufacturer": dev.info.manufacturer,
            "profiles": [[p.token, p.width, p.height] for p in dev.profiles],
            "main": [dev.main.profile.token, dev.main.uri, dev.main.snapshot_uri] if dev.main else None,
            "sub": [dev.sub.profile.token, dev.sub.uri] if dev.sub else None,
            "clock_offset_s": dev.clock_offset_s,
        }
        try:
            asyncio.run(fetch_device("127.0.0.1", ONVIF_PORT, USER, "wrong-password", timeout=15))
            out["wrong_password"] = {"raised": None}
        except Exception as err:  # the assertion is on the type, made by the test
            out["wrong_password"] = {"raised": type(err).__name__, "is_auth_failed": isinstance(err, AuthFailed),
                                     "message": str(err), "cause": type(err.__cause__).__name__}

        config = work / "agent.yaml"
        config.write_text(BASE_CONFIG, encoding="utf-8")
        common = ["--config", str(config), "--timeout", "1.5", "--username", USER, "--password-env", PASSWORD_ENV]
        no_yes = _discover_cli(common, PASSWORD)
        out["cli_without_yes"] = {"rc": no_yes.returncode, "stderr": no_yes.stderr, "unchanged": config.read_text("utf-8") == BASE_CONFIG}
        first = _discover_cli([*common, "--yes"], PASSWORD)
        out["cli_first"] = {"rc": first.returncode, "stdout": first.stdout, "stderr": first.stderr}
        out["config_after_first"] = config.read_text("utf-8")
        out["backup_is_original"] = (work / "agent.yaml.bak").read_text("utf-8") == BASE_CONFIG
        out["config_check"] = _config_check(config)
        second = _discover_cli([*common, "--yes"], PASSWORD)
        out["cli_second"] = {"rc": second.returncode, "stderr": second.stderr}
        out["config_after_second"] = config.read_text("utf-8")
        bad = _discover_cli([*common, "--yes"], "wrong-password")
        out["cli_wrong_password"] = {"rc": bad.returncode, "stderr": bad.stderr,
                                     "config_unchanged": config.read_text("utf-8") == out["config_after_second"]}

        uni = _discover_cli(["--address", f"127.0.0.1:{ONVIF_PORT}", "--timeout", "1", "--username", USER,
                             "--password-env", PASSWORD_ENV], PASSWORD)
        out["cli_unicast"] = {"rc": uni.returncode, "stdout": uni.stdout, "stderr": uni.stderr}

        from edge_agent.config import load_config

        cams = {c.id: c for c in load_config(config).cameras}
        written = next(c for c in cams.values() if c.source.onvif_host)
        out["stream_main"] = decode_frames(written.source.url)
        out["stream_sub"] = decode_frames(written.source.sub_url)
    finally:
        stop.set()
        cam.stop()
    return out


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "."), ensure_ascii=False, indent=1))
