"""`FrameSource` for one GB/T 28181 channel: INVITE through the server, decode in this thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections.abc import Iterator

import av
import structlog

from edge_agent.capture.gb28181.dialog import MediaSession
from edge_agent.capture.gb28181.server import GbSipServer
from edge_agent.errors import RetryLater

log = structlog.get_logger(__name__)
MAX_BAD_UNITS = 50


class GbChannelSource:
    """Yields decoded frames of `channel_id`. Runs in the camera's decode thread; the server's
    asyncio loop does the signalling. Raises RetryLater when the channel is offline, the INVITE
    fails, the device ends the session or no media arrives within `media_timeout_s`."""

    def __init__(self, server: GbSipServer, channel_id: str, *, transport: str = "udp",
                 media_timeout_s: float = 10.0, invite_timeout_s: float = 10.0, name: str | None = None) -> None:
        self.server = server
        self.channel_id = channel_id
        self.transport = transport
        self.media_timeout_s = media_timeout_s
        self.invite_timeout_s = invite_timeout_s
        self.name = name or f"gb:{channel_id}"
        self.session: MediaSession | None = None
        self._log = log.bind(channel=channel_id, transport=transport)

    def _run(self, coro, timeout: float):
        loop = self.server.loop
        if loop is None or loop.is_closed():
            coro.close()
            raise RetryLater("GB SIP server is not running")
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError as err:
            fut.cancel()
            raise RetryLater(f"GB channel {self.channel_id}: no answer within {timeout}s") from err

    def frames(self, stop: threading.Event) -> Iterator[av.VideoFrame]:
        session = self._run(self.server.invite(self.channel_id, self.transport), self.invite_timeout_s)
        self.session = session
        try:
            yield from self._decode(session, stop)
        finally:
            self.session = None
            try:
                self._run(self.server.bye(session), self.invite_timeout_s)
            except RetryLater as err:
                self._log.warning("gb_bye_failed", error=str(err))

    def _decode(self, session: MediaSession, stop: threading.Event) -> Iterator[av.VideoFrame]:
        ctx: av.CodecContext | None = None
        last = time.monotonic()
        bad = 0
        ended = False
        while not stop.is_set():
            try:
                au = session.receiver.units.get(timeout=0.1)
            except queue.Empty:
                if session.closed:
                    ended = True
                    break
                if time.monotonic() - last > self.media_timeout_s:
                    raise RetryLater(f"GB channel {self.channel_id}: no media for {self.media_timeout_s}s") from None
                continue
            last = time.monotonic()
            if ctx is None:
                if au.codec not in ("h264", "hevc"):
                    raise RetryLater(f"GB channel {self.channel_id}: unsupported PS stream type 0x{au.stream_type:02x}")
                ctx = av.CodecContext.create(au.codec, "r")
                self._log.info("gb_decoder_open", codec=au.codec)
            try:
                for packet in ctx.parse(au.data):
                    yield from ctx.decode(packet)
                bad = 0
            except av.error.FFmpegError as err:
                bad += 1
                self._log.debug("gb_decode_error", error=str(err), consecutive=bad)
                if bad > MAX_BAD_UNITS:
                    raise RetryLater(f"GB channel {self.channel_id}: {bad} undecodable frames in a row") from err
        if ctx is not None:
            try:
                for packet in ctx.parse(b""):
                    yield from ctx.decode(packet)
                yield from ctx.decode(None)
            except av.error.FFmpegError:
                pass
        if ended:
            why = f" ({session.receiver.ended})" if session.receiver.ended else ""
            raise RetryLater(f"GB channel {self.channel_id}: the device ended the session{why}")
