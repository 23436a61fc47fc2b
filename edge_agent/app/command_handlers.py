"""What the box does for each command of the cloud (`edge_agent/app/commands.py` checks and dispatches).

`status` answers the box's state in a few numbers; `snapshot_now` queues a JPEG of a camera's
latest frame (at snapshot priority) and answers its media reference, which the console then shows
once uploaded; `live_start` / `live_stop` start (or renew) and end a camera's live video
(edge_agent/live); `playback` cuts a wall-clock range of the camera's recording (回放, at most
`recording.playback_max_s`) and uploads it at clip priority; `collect_mark` keeps an alert's frame
as a false-alarm example of the frame collector (`collect_wiring`, whose `wire_collector` the
Agent calls from here).
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bk_contract import Command
from edge_agent import __version__
from edge_agent.app.collect_wiring import collect_mark, wire_collector
from edge_agent.app.commands import CommandFailed, Handler
from edge_agent.app.config_push import PushRefused
from edge_agent.capture.recording import RecordingError, SegmentRecorder
from edge_agent.events.snapshot import render_snapshot
from edge_agent.live.encoder import LiveProfile
from edge_agent.outbox.priority import Priority


def agent_handlers(agent: Any) -> dict[str, Handler]:
    """The handlers of a running `Agent`."""
    started = time.monotonic()

    def status(cmd: Command) -> dict[str, Any]:
        health = agent.health()
        stats = agent.outbox.stats() if agent.outbox is not None else {}
        return {"version": __version__, "uptime_s": round(time.monotonic() - started, 1),
                "cameras": len(health), "cameras_online": sum(1 for h in health if h.state == "online"),
                "inference_ms": round(agent.inference_ms, 1),
                "variant": agent.variant.chosen.name if agent.variant is not None else None,
                "config_version": agent.config_control.version if agent.config_control is not None else "",
                "config_on_trial": bool(agent.config_control and agent.config_control.trial),
                "outbox_depth": int(stats.get("depth_total", 0))}

    def camera_of(cmd: Command) -> str:
        if (cmd.camera_id or "") not in agent.cameras:
            raise CommandFailed(f"no camera {cmd.camera_id!r} on this box (it has {', '.join(agent.cameras) or 'none'})")
        return cmd.camera_id or ""

    def snapshot_now(cmd: Command) -> dict[str, Any]:
        worker = agent.cameras[camera_of(cmd)].worker
        frame = worker.latest_detect or worker.latest_main
        if frame is None:
            raise CommandFailed(f"camera {cmd.camera_id} has no picture yet (offline or starting)")
        shot = render_snapshot(frame, [], None)
        ref = agent.outbox.add_media(shot.jpeg, "image/jpeg", priority=Priority.SNAPSHOT)
        return {"media_id": ref.id, "sha256": ref.sha256, "bytes": ref.bytes, "width": shot.size[0],
                "height": shot.size[1]}

    def live_start(cmd: Command) -> dict[str, Any]:
        return agent.live.start(camera_of(cmd))

    def live_stop(cmd: Command) -> dict[str, Any]:
        return {"camera_id": cmd.camera_id, "was_live": agent.live.stop(camera_of(cmd))}

    def playback(cmd: Command) -> dict[str, Any]:
        recorder = agent.cameras[camera_of(cmd)].worker.recorder
        if recorder is None:
            raise CommandFailed("recording (回放) is off on this box")
        try:
            start, end = (datetime.fromisoformat(str(cmd.args[k])).timestamp() for k in ("start", "end"))
        except (KeyError, ValueError) as err:
            raise CommandFailed(f"playback needs args start and end as ISO 8601 times with a zone: {err}") from err
        if end - start > agent.cfg.recording.playback_max_s:
            raise CommandFailed(f"at most {agent.cfg.recording.playback_max_s:g} s per playback")
        try:
            clip = recorder.cut(start, end)
        except RecordingError as err:
            raise CommandFailed(str(err)) from err
        ref = agent.outbox.add_media(clip, "video/mp4", priority=Priority.CLIP)
        return {"media_id": ref.id, "sha256": ref.sha256, "bytes": ref.bytes, "chunks": -(-ref.bytes // agent.outbox.chunk_bytes)}

    def config_push(cmd: Command) -> dict[str, Any]:
        text, version = cmd.args.get("config"), str(cmd.args.get("version", cmd.id))
        if not isinstance(text, str) or not text.strip():
            raise CommandFailed("config_push needs args.config: the whole agent config as YAML text")
        try:
            return agent.config_control.push(text, version)
        except PushRefused as err:
            raise CommandFailed(f"config refused: {err}") from err

    def reload(cmd: Command) -> dict[str, Any]:
        try:
            return agent.config_control.reload()
        except PushRefused as err:
            raise CommandFailed(f"config refused: {err}") from err

    return {"status": status, "snapshot_now": snapshot_now, "live_start": live_start, "live_stop": live_stop,
            "playback": playback, "config_push": config_push, "reload": reload,
            "collect_mark": lambda cmd: collect_mark(agent, cmd)}


__all__ = ["agent_handlers", "live_profile", "recorder_for", "telemetry_extras", "wire_collector"]


def recorder_for(cfg: Any, camera_id: str) -> SegmentRecorder | None:
    """The on-disk recorder of one camera, when recording is on."""
    rec = cfg.recording
    if not rec.enabled:
        return None
    root = rec.dir or Path(cfg.storage.path).parent / "recordings"
    return SegmentRecorder(root, camera_id, segment_s=rec.segment_s, quota_bytes=int(rec.quota_mb_per_camera * (1 << 20)),
                           keep_s=rec.keep_h * 3600)


def telemetry_extras(agent: Any) -> dict[str, dict[str, float]]:
    """Per camera: the live bitrate of those being watched, the hours of recording kept."""
    live = agent.live.status() if agent.live is not None else {}
    return {"live_bps": {cam: float(s["bitrate_bps"]) for cam, s in live.items()},
            "ring_hours": {cid: cp.worker.recorder.hours_kept() for cid, cp in agent.cameras.items()
                           if cp.worker.recorder is not None}}


def live_profile(cfg: Any) -> LiveProfile:
    """The live encoding: 640x360, 12 fps, 1 s GOP, at most 400 kbit/s and at most 80 % of the camera's
    share of the upload budget (alerts and their media go first)."""
    share = int(cfg.uplink.budget_kbps_per_camera * 1000 * 0.8)
    return LiveProfile(bitrate_bps=max(64_000, min(400_000, share)))
