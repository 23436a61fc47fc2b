"""An RTSP camera stream (TCP or UDP transport) through PyAV/FFmpeg."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import av

from edge_agent.capture.sources.av_io import decode_video, mask_url, open_input, with_credentials


@dataclass
class RtspSource:
    """Frames of an RTSP stream; credentials are put into the URL only when opening."""

    url: str
    transport: str = "tcp"
    username: str | None = None
    password: str | None = None
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or mask_url(self.url)

    def options(self) -> dict[str, str]:
        return {
            "rtsp_transport": self.transport,
            # socket-level timeout in microseconds, beside PyAV's interrupt-callback timeouts
            "timeout": str(int(self.read_timeout_s * 1_000_000)),
            # the packets read while probing are dropped, not replayed: the first of them has no
            # timestamp; frames start at the next keyframe (one GOP after connecting)
            "fflags": "nobuffer",
            "max_delay": "500000",
        }

    def frames(self, stop: threading.Event) -> Iterator[av.VideoFrame]:
        url = with_credentials(self.url, self.username, self.password)
        container = open_input(url, options=self.options(), open_timeout_s=self.open_timeout_s,
                               read_timeout_s=self.read_timeout_s, what=self.name)
        try:
            yield from decode_video(container, stop, what=self.name)
        finally:
            container.close()
