"""Frame sources: RTSP cameras, video files and GB/T 28181 channels, behind the `FrameSource` protocol."""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.capture.sources.base import FrameSource
from edge_agent.capture.sources.file import FileSource
from edge_agent.capture.sources.rtsp import RtspSource
from edge_agent.config import CameraConfig, SourceConfig, resolve_secret
from edge_agent.errors import NeedsHuman

__all__ = ["FileSource", "FrameSource", "RtspSource", "open_source"]


def open_source(cam: CameraConfig, *, sub: bool = False,
                gb: Callable[[CameraConfig], FrameSource] | None = None) -> FrameSource:
    """The source of a camera's main stream, or of its sub-stream (`sub=True`, if configured).

    `gb` builds gb28181 sources (the agent's `GbBridge.source`); it is None when the SIP server
    is not enabled. GB channels have one stream, so `sub` does not apply to them.
    """
    src: SourceConfig = cam.source
    url = (src.sub_url if sub and src.sub_url else src.url) or ""
    name = f"{cam.id}/{'sub' if sub and src.sub_url else 'main'}"
    if src.type == "rtsp":
        return RtspSource(url, transport=src.transport, username=src.username,
                          password=resolve_secret(src.password_env),
                          open_timeout_s=cam.open_timeout_s, read_timeout_s=cam.read_timeout_s, name=name)
    if src.type == "file":
        return FileSource(url, loop=src.loop, realtime=src.realtime, open_timeout_s=cam.open_timeout_s,
                          read_timeout_s=cam.read_timeout_s, name=name)
    if src.type == "gb28181":
        if gb is None:
            raise NeedsHuman(f"camera {cam.id}: a gb28181 source needs `gb28181.enabled: true` in the agent config")
        return gb(cam)
    raise NeedsHuman(f"camera {cam.id}: source type {src.type!r} is not served by the pipeline")
