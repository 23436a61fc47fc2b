"""One camera's live encoder: decoded frames in, fragmented-MP4 pieces out (bk_contract.fmp4).

libx264 with `ultrafast`/`zerolatency`, no B-frames, a keyframe every `gop_s`, at most `fps` frames a
second (the others are skipped by their media time), scaled by libswscale to `width` x `height`;
muxed by FFmpeg's mp4 muxer with one fragment per frame (`frag_every_frame`), so a frame leaves the
box as soon as it is encoded. The init segment is repeated before every keyframe fragment: a piece
lost on the way (live is QoS 0) or a viewer joining late costs at most one GOP.

`bitrate_bps` is what the pieces may cost the upload budget, which counts MQTT packets: the video
itself gets that minus the framing around it (`video_bitrate`), capped by the VBV at one second
(maxrate = bufsize = the video rate), so the pieces average about `bitrate_bps` (393–401 kbit/s
measured for 400).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from fractions import Fraction

import av

from bk_contract import fmp4

# Framing that the budget counts on top of the H.264 bitstream, measured on the 1080p test clip
# (scripts/bench_live.py): a one-frame fragment's moof + mdat header (~116 bytes) and the MQTT PUBLISH
# header with the live topic (~45 bytes) per frame; the init segment (~780 bytes) again before every
# keyframe. Without it the pieces came to 422 kbit/s for a 400 kbit/s profile.
FRAME_FRAMING_BYTES = 165
INIT_BYTES = 800


def video_bitrate(bitrate_bps: int, fps: float, gop_s: float) -> int:
    """Bits/s left for the H.264 stream when the pieces, framing included, may cost `bitrate_bps`."""
    framing = fps * FRAME_FRAMING_BYTES * 8 + INIT_BYTES * 8 / max(gop_s, 1e-3)
    return max(bitrate_bps // 2, int(bitrate_bps - framing))


@dataclass(frozen=True, slots=True)
class LiveProfile:
    width: int = 640
    height: int = 360
    fps: float = 12.0
    bitrate_bps: int = 400_000
    gop_s: float = 1.0


class _Sink(io.RawIOBase):
    """Where the muxer writes: bytes collected until they are cut into pieces."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.buffer += b
        return len(b)


class LiveEncoder:
    """Not thread-safe: one thread feeds it (the camera's live session)."""

    def __init__(self, profile: LiveProfile) -> None:
        self.profile = profile
        self._sink = _Sink()
        self._out = av.open(self._sink, "w", format="mp4",
                            options={"movflags": "frag_keyframe+empty_moov+default_base_moof+frag_every_frame"})
        rate = Fraction(profile.fps).limit_denominator(1000)
        self._stream = self._out.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = profile.width, profile.height
        self._stream.pix_fmt = "yuv420p"
        video_bps = video_bitrate(profile.bitrate_bps, profile.fps, profile.gop_s)
        self._stream.bit_rate = video_bps
        gop = max(1, round(profile.fps * profile.gop_s))
        self._stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(gop), "keyint_min": str(gop),
                                "sc_threshold": "0", "bf": "0", "maxrate": str(video_bps), "bufsize": str(video_bps)}
        self._stream.codec_context.time_base = Fraction(1, 1000)
        self._next_t: float | None = None
        self._t0: float | None = None
        self.init: bytes | None = None
        self._trex = 0
        self.frames = 0
        self.bytes_out = 0

    def feed(self, frame: av.VideoFrame, t: float) -> list[bytes]:
        """Encode `frame` (media time `t` s) if it is due; returns the pieces ready to publish."""
        if self._next_t is not None and t < self._next_t:
            return []
        self._next_t = t + 1.0 / self.profile.fps if self._next_t is None else max(self._next_t + 1.0 / self.profile.fps,
                                                                                     t - 1.0 / self.profile.fps)
        if self._t0 is None:
            self._t0 = t
        small = frame.reformat(width=self.profile.width, height=self.profile.height, format="yuv420p",
                               interpolation="BILINEAR")
        small.pts = int((t - self._t0) * 1000)
        small.time_base = Fraction(1, 1000)
        for packet in self._stream.encode(small):
            self._out.mux(packet)
        self.frames += 1
        return self._pieces()

    def _pieces(self) -> list[bytes]:
        pieces, rest = fmp4.split_pieces(bytes(self._sink.buffer))
        self._sink.buffer = bytearray(rest)
        out: list[bytes] = []
        for piece in pieces:
            if fmp4.is_init(piece):
                self.init = piece
                self._trex = fmp4.default_sample_flags(piece)
                continue  # sent before each keyframe fragment
            if self.init is not None and fmp4.starts_with_keyframe(piece, self._trex):
                out.append(self.init)
            out.append(piece)
        self.bytes_out += sum(len(p) for p in out)
        return out

    def close(self) -> None:
        with contextlib.suppress(av.FFmpegError, ValueError):
            self._out.close()
