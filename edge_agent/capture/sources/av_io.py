"""PyAV at the boundary: open a container with timeouts, demux and decode, translate errors once.

`RetryLater` for what may heal by itself (refused, unreachable, stalled, garbage bytes),
`NeedsHuman` for what will not (`AuthFailed` on 401/403, a file that does not exist).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import av
import av.error
import structlog

from edge_agent.errors import AuthFailed, NeedsHuman, RetryLater

log = structlog.get_logger(__name__)

# consecutive undecodable packets after which the stream counts as garbage and is reopened
MAX_BAD_PACKETS = 100


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """`rtsp://host/path` with `user:password@` inserted (percent-encoded); unchanged without a user."""
    if not username:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = quote(username, safe="")
    if password is not None:
        netloc += ":" + quote(password, safe="")
    netloc += "@" + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_CRED = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/@:]*)(:[^/@]*)?@", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to log."""
    return _CRED.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def translate(err: BaseException, what: str) -> Exception:
    """A library error as RetryLater / NeedsHuman; `what` names the stream (already masked)."""
    if isinstance(err, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return AuthFailed(f"{what}: credentials refused ({err.__class__.__name__})")
    if isinstance(err, av.error.FileNotFoundError | FileNotFoundError) and "://" not in what:
        return NeedsHuman(f"{what}: file not found")
    if isinstance(err, av.error.ExitError):
        return RetryLater(f"{what}: timed out")
    msg = mask_url(str(err))[:300]
    return RetryLater(f"{what}: {err.__class__.__name__}: {msg}")


def open_input(url: str, *, options: dict[str, str], open_timeout_s: float, read_timeout_s: float,
               what: str) -> av.container.InputContainer:
    """av.open with timeouts; raises RetryLater / NeedsHuman, never a library error."""
    try:
        container = av.open(url, mode="r", options=options, timeout=(open_timeout_s, read_timeout_s))
    except Exception as err:  # noqa: BLE001 - every library error is translated here, once
        raise translate(err, what) from err
    if not container.streams.video:
        container.close()
        raise RetryLater(f"{what}: no video stream")
    return container


def demux_video(container: av.container.InputContainer, stop: threading.Event, *,
                what: str) -> Iterator[av.Packet]:
    """Packets of the first video stream from its first keyframe on, without decoding them.

    A stream joined mid-GOP starts at the next keyframe, so every consumer (decoder, packet ring,
    clip) sees a decodable sequence. The demuxer's final empty packet (size 0) is passed on: it
    flushes a decoder. Demux errors and stalls (one read timeout) raise RetryLater.
    """
    stream = container.streams.video[0]
    keyframe_seen = False
    packets = container.demux(stream)
    read_timeout = getattr(container, "read_timeout", None)
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            packet = next(packets)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001
            raise translate(err, what) from err
        # FFmpeg's RTSP demuxer answers the first read timeout with the packet it still had queued
        # and only the next read fails: a read that took the whole timeout is the stall itself
        # (noticed after one read timeout instead of two)
        if read_timeout and packet.size and time.monotonic() - t0 >= read_timeout:
            raise RetryLater(f"{what}: timed out (no data for {read_timeout:g} s)")
        if not keyframe_seen:
            if not packet.is_keyframe:
                continue
            keyframe_seen = True
        yield packet


def decode_packets(packets: Iterable[av.Packet], *, what: str) -> Iterator[av.VideoFrame]:
    """Decode `packets` (each with its stream's codec context); corrupt frames are dropped.

    A few undecodable packets are logged and skipped; a long run of them means garbage and raises
    RetryLater.
    """
    bad = 0
    for packet in packets:
        try:
            frames = packet.decode()
        except av.error.FFmpegError as err:
            bad += 1
            if bad == 1 or bad % 25 == 0:
                log.warning("decode_error", stream=what, error=str(err)[:200], consecutive=bad)
            if bad >= MAX_BAD_PACKETS:
                raise RetryLater(f"{what}: {bad} undecodable packets in a row") from err
            continue
        if frames:
            bad = 0
        for frame in frames:
            if not frame.is_corrupt:
                yield frame


def decode_video(container: av.container.InputContainer, stop: threading.Event, *,
                 what: str) -> Iterator[av.VideoFrame]:
    """Every frame of the first video stream (every packet decoded, frame threads on).

    Packets before the first keyframe are not decoded (a stream joined mid-GOP would give smeared
    frames) and frames the decoder marks corrupt are dropped (see `demux_video`, `decode_packets`).
    """
    container.streams.video[0].thread_type = "AUTO"
    yield from decode_packets(demux_video(container, stop, what=what), what=what)
