"""Relays a box's live video to browsers: one stream from the box, shared by every viewer.

Pieces arrive from MQTT (`bk/v1/{device}/live/{camera}`, fragmented MP4, bk_contract.fmp4) on the
MQTT client's thread and are handed to the event loop. Per camera the relay keeps the init segment
and the fragments since the last keyframe (at most `gop_max`), so a viewer who joins gets those at
once and starts decoding without waiting for the next keyframe (视频秒开). Each viewer has a bounded
queue; one that falls behind is dropped back to the next keyframe rather than holding memory.

While a camera has viewers the relay asks its box for live (`live_start`) at once and every
`renew_s` (the box stops by itself when nobody renews); when the last viewer leaves it sends
`live_stop`. `send(device, camera, name)` is the command sender (cloud_receiver.control), run off
the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from bk_contract import fmp4

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # (device id, camera id)
Sender = Callable[[str, str, str], Awaitable[None]]


@dataclass(eq=False)
class Viewer:
    queue: asyncio.Queue[bytes]
    behind: bool = False  # dropped pieces: waits for the next keyframe


@dataclass(eq=False)
class LiveStream:
    key: Key
    init: bytes | None = None
    codec: str | None = None
    trex: int = 0
    gop: list[bytes] = field(default_factory=list)
    viewers: set[Viewer] = field(default_factory=set)
    pieces: int = 0
    bytes: int = 0
    last_piece: float = 0.0
    renewer: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # an init and a keyframe are here


class LiveRelay:
    def __init__(self, send: Sender, *, renew_s: float = 10.0, gop_max: int = 300, queue_max: int = 120) -> None:
        self.send = send
        self.renew_s, self.gop_max, self.queue_max = renew_s, gop_max, queue_max
        self.streams: dict[Key, LiveStream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bad_pieces = 0

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # --- from MQTT --------------------------------------------------------------------------
    def feed_threadsafe(self, device_id: str, camera_id: str, piece: bytes) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.feed, device_id, camera_id, piece)

    def feed(self, device_id: str, camera_id: str, piece: bytes) -> None:
        stream = self.streams.setdefault((device_id, camera_id), LiveStream((device_id, camera_id)))
        try:
            if fmp4.is_init(piece):
                if piece != stream.init:
                    stream.init, stream.codec = piece, fmp4.codec_string(piece)
                    stream.trex = fmp4.default_sample_flags(piece)
                return
            key_frame = fmp4.starts_with_keyframe(piece, stream.trex)
        except fmp4.Fmp4Error as err:
            self.bad_pieces += 1
            log.warning("live_piece_unreadable", device=device_id, camera=camera_id, error=str(err))
            return
        stream.pieces += 1
        stream.bytes += len(piece)
        stream.last_piece = time.monotonic()
        if key_frame:
            stream.gop = [piece]
        elif stream.gop and len(stream.gop) < self.gop_max:
            stream.gop.append(piece)
        else:
            return  # no keyframe yet: nobody could decode it
        if stream.init is not None and stream.gop:
            stream.ready.set()
        for viewer in list(stream.viewers):
            self._offer(viewer, piece, key_frame, stream)

    def _offer(self, viewer: Viewer, piece: bytes, key_frame: bool, stream: LiveStream) -> None:
        if viewer.behind:
            if not key_frame:
                return
            viewer.behind = False
            viewer.queue.put_nowait(stream.init or b"")
        try:
            viewer.queue.put_nowait(piece)
        except asyncio.QueueFull:
            viewer.behind = True
            while not viewer.queue.empty():
                viewer.queue.get_nowait()

    # --- viewers ---------------------------------------------------------------------------
    async def watch(self, device_id: str, camera_id: str, timeout_s: float = 20.0) -> AsyncIterator[str | bytes]:
        """The codec string, then the init segment and the fragments from the last keyframe, then live."""
        stream = self.streams.setdefault((device_id, camera_id), LiveStream((device_id, camera_id)))
        viewer = Viewer(asyncio.Queue(self.queue_max))
        stream.viewers.add(viewer)
        if stream.renewer is None or stream.renewer.done():
            stream.renewer = asyncio.create_task(self._renew(stream), name=f"live-renew-{device_id}-{camera_id}")
        try:
            await asyncio.wait_for(stream.ready.wait(), timeout_s)
            assert stream.codec is not None and stream.init is not None
            start = [stream.init, *stream.gop]
            while not viewer.queue.empty():  # already in `start`: the queue goes on from here
                viewer.queue.get_nowait()
            viewer.behind = False
            yield stream.codec
            for piece in start:
                yield piece
            while True:
                yield await viewer.queue.get()
        finally:
            stream.viewers.discard(viewer)
            if not stream.viewers:
                await self._last_viewer_left(stream)

    async def _renew(self, stream: LiveStream) -> None:
        device, camera = stream.key
        while stream.viewers:
            try:
                await self.send(device, camera, "live_start")
            except Exception as err:  # noqa: BLE001 - the box may be offline: try again at the next renewal
                log.warning("live_start_failed", device=device, camera=camera, error=str(err))
            await asyncio.sleep(self.renew_s)

    async def _last_viewer_left(self, stream: LiveStream) -> None:
        if stream.renewer is not None:
            stream.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream.renewer
            stream.renewer = None
        stream.ready.clear()
        stream.gop = []
        device, camera = stream.key
        try:
            await self.send(device, camera, "live_stop")
        except Exception as err:  # noqa: BLE001 - the box stops by itself when nobody renews
            log.info("live_stop_failed", device=device, camera=camera, error=str(err))

    def stats(self) -> dict[str, dict[str, int | str | None]]:
        """Per camera: viewers, pieces and bytes relayed, the codec."""
        return {f"{d}/{c}": {"viewers": len(s.viewers), "pieces": s.pieces, "bytes": s.bytes, "codec": s.codec}
                for (d, c), s in self.streams.items()}
