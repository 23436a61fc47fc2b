"""SDP (RFC 4566) as GB/T 28181 uses it: PS/90000 over RTP/AVP or TCP/RTP/AVP, `y=` SSRC, `f=`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from edge_agent.errors import ParseError

MAX_SDP = 16 * 1024
_SSRC = re.compile(r"^\d{1,10}$")


@dataclass
class SdpMedia:
    media: str
    port: int
    proto: str
    formats: list[str]
    rtpmap: dict[str, str] = field(default_factory=dict)
    attributes: list[tuple[str, str]] = field(default_factory=list)
    connection: str | None = None

    def attr(self, name: str) -> str | None:
        for k, v in self.attributes:
            if k == name:
                return v
        return None

    @property
    def direction(self) -> str | None:
        for k, _ in self.attributes:
            if k in ("sendonly", "recvonly", "sendrecv", "inactive"):
                return k
        return None

    @property
    def is_tcp(self) -> bool:
        return self.proto.upper().startswith("TCP/")

    @property
    def setup(self) -> str | None:
        """`active` / `passive` / `actpass` (RFC 4145), None for UDP."""
        return self.attr("setup")


@dataclass
class SdpSession:
    origin_user: str
    origin_address: str
    session_name: str
    connection: str | None
    media: list[SdpMedia]
    ssrc: str | None = None  # GB `y=`: 10 decimal digits
    media_format: str | None = None  # GB `f=`
    session_id: str = "0"
    version: str = "0"
    time: str = "0 0"
    uri: str | None = None

    def video(self) -> SdpMedia:
        for m in self.media:
            if m.media == "video":
                return m
        raise ParseError("SDP has no m=video line")

    def address_for(self, m: SdpMedia) -> str:
        addr = m.connection or self.connection
        if not addr:
            raise ParseError("SDP has no c= line for the media")
        return addr

    @property
    def ssrc_int(self) -> int | None:
        return int(self.ssrc) & 0xFFFFFFFF if self.ssrc else None


def _connection(value: str, where: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise ParseError(f"SDP {where} c={value[:40]!r} is not 'IN IP4 <address>'")
    return parts[2].split("/", 1)[0]


def parse_sdp(data: bytes | str) -> SdpSession:
    """Parse an SDP body; raises ParseError naming the line on bad input."""
    if isinstance(data, bytes):
        if len(data) > MAX_SDP:
            raise ParseError(f"SDP of {len(data)} bytes exceeds {MAX_SDP}")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ParseError(f"SDP is not UTF-8 at byte {err.start}") from err
    lines = [ln.strip() for ln in data.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines or lines[0] != "v=0":
        raise ParseError("SDP does not start with v=0")
    sess = SdpSession(origin_user="", origin_address="", session_name="", connection=None, media=[])
    seen_o = False
    cur: SdpMedia | None = None
    for no, line in enumerate(lines, start=1):
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise ParseError(f"SDP line {no}: {line[:40]!r} is not 'x=value'")
        key, value = line[0], line[2:]
        if key == "o":
            parts = value.split()
            if len(parts) != 6:
                raise ParseError(f"SDP line {no}: o= needs 6 fields, got {len(parts)}")
            sess.origin_user, sess.session_id, sess.version = parts[0], parts[1], parts[2]
            sess.origin_address = parts[5]
            seen_o = True
        elif key == "s":
            sess.session_name = value
        elif key == "u":
            sess.uri = value
        elif key == "t":
            sess.time = value
        elif key == "c":
            addr = _connection(value, f"line {no}")
            if cur is None:
                sess.connection = addr
            else:
                cur.connection = addr
        elif key == "m":
            cur = _media(value, no)
            sess.media.append(cur)
        elif key == "a":
            name, _, val = value.partition(":")
            if cur is None:
                continue  # session-level attributes are not used by GB devices
            if name == "rtpmap":
                pt, _, enc = val.partition(" ")
                if not pt.isdigit() or not enc:
                    raise ParseError(f"SDP line {no}: a=rtpmap:{val[:30]!r} is not '<pt> <enc>/<rate>'")
                cur.rtpmap[pt] = enc
            cur.attributes.append((name, val))
        elif key == "y":
            if not _SSRC.match(value):
                raise ParseError(f"SDP line {no}: y={value[:20]!r} is not a decimal SSRC")
            sess.ssrc = value
        elif key == "f":
            sess.media_format = value
    if not seen_o:
        raise ParseError("SDP lacks the o= line")
    if not sess.media:
        raise ParseError("SDP has no m= line")
    return sess


def _media(value: str, no: int) -> SdpMedia:
    parts = value.split()
    if len(parts) < 4:
        raise ParseError(f"SDP line {no}: m={value[:40]!r} needs '<media> <port> <proto> <fmt>...'")
    port = parts[1].split("/", 1)[0]
    if not port.isdigit() or int(port) > 65535:
        raise ParseError(f"SDP line {no}: m= port {parts[1][:10]!r} is not a port number")
    if parts[2].upper() not in ("RTP/AVP", "TCP/RTP/AVP", "RTP/AVP/TCP"):
        raise ParseError(f"SDP line {no}: transport {parts[2][:20]!r} is not RTP/AVP or TCP/RTP/AVP")
    return SdpMedia(media=parts[0], port=int(port), proto=parts[2], formats=parts[3:])


def serialize_sdp(s: SdpSession) -> bytes:
    lines = ["v=0", f"o={s.origin_user} {s.session_id} {s.version} IN IP4 {s.origin_address}",
             f"s={s.session_name}"]
    if s.uri:
        lines.append(f"u={s.uri}")
    if s.connection:
        lines.append(f"c=IN IP4 {s.connection}")
    lines.append(f"t={s.time}")
    for m in s.media:
        lines.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
        if m.connection:
            lines.append(f"c=IN IP4 {m.connection}")
        for k, v in m.attributes:
            lines.append(f"a={k}:{v}" if v else f"a={k}")
    if s.ssrc:
        lines.append(f"y={s.ssrc}")
    if s.media_format:
        lines.append(f"f={s.media_format}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def play_offer(*, server_id: str, ip: str, port: int, ssrc: str, transport: str) -> SdpSession:
    """The INVITE offer the server sends for live video (`transport`: udp, tcp_passive, tcp_active).

    `tcp_passive` means the server listens and the device connects (device is `setup:active`).
    """
    proto = "RTP/AVP" if transport == "udp" else "TCP/RTP/AVP"
    attrs = [("recvonly", ""), ("rtpmap", "96 PS/90000"), ("rtpmap", "98 H264/90000"), ("rtpmap", "97 MPEG4/90000")]
    if transport == "tcp_passive":
        attrs += [("setup", "passive"), ("connection", "new")]
    elif transport == "tcp_active":
        attrs += [("setup", "active"), ("connection", "new")]
    media = SdpMedia("video", port, proto, ["96", "98", "97"], {"96": "PS/90000", "98": "H264/90000", "97": "MPEG4/90000"},
                     attrs)
    return SdpSession(origin_user=server_id, origin_address=ip, session_name="Play", connection=ip,
                      media=[media], ssrc=ssrc)
