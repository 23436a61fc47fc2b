"""SIP message parser and serializer (RFC 3261 subset used by GB/T 28181).

Pure functions over bytes. Header names are canonicalised (compact forms expanded); a header
that may repeat (Via, Record-Route, ...) keeps every value in order, comma-separated values split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from edge_agent.errors import ParseError

MAX_MESSAGE = 64 * 1024
MAX_HEADERS = 100

COMPACT = {
    "v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact", "l": "Content-Length",
    "c": "Content-Type", "k": "Supported", "s": "Subject", "e": "Content-Encoding", "o": "Event",
}
CANONICAL = {
    n.lower(): n for n in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Length", "Content-Type", "Max-Forwards",
        "Expires", "User-Agent", "Supported", "Subject", "Content-Encoding", "Event", "Date", "Allow",
        "WWW-Authenticate", "Authorization", "Route", "Record-Route", "Proxy-Authenticate",
        "Proxy-Authorization", "Server", "Monitor-User-Identity",
    )
}
# Headers whose value may list several entries separated by commas (RFC 3261 7.3.1).
LIST_HEADERS = {"Via", "Route", "Record-Route", "Allow", "Supported"}

_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~\-]+$")
_STATUS = re.compile(r"^SIP/2\.0 ([1-6]\d\d)(?: (.*))?$")
_REQUEST = re.compile(r"^([A-Za-z]+) (\S+) SIP/2\.0$")


def canonical_name(name: str) -> str:
    low = name.strip().lower()
    if low in COMPACT:
        return COMPACT[low]
    return CANONICAL.get(low, name.strip())


@dataclass
class SipMessage:
    """A SIP request (method set) or response (status set)."""

    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str, default: str | None = None) -> str | None:
        key = canonical_name(name).lower()
        for n, v in self.headers:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        key = canonical_name(name).lower()
        return [v for n, v in self.headers if n.lower() == key]

    def set(self, name: str, value: str) -> None:
        """Replace every value of `name` with one value (appended if absent)."""
        key = canonical_name(name)
        kept = [(n, v) for n, v in self.headers if n.lower() != key.lower()]
        self.headers = kept + [(key, value)]

    def add(self, name: str, value: str) -> None:
        self.headers.append((canonical_name(name), value))

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.get("CSeq") or "")

    def to_bytes(self) -> bytes:
        return serialize(self)


def parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10:
        raise ParseError(f"SIP CSeq header {value[:40]!r} is not '<number> <METHOD>'")
    return int(parts[0]), parts[1].upper()


def _split_list(value: str) -> list[str]:
    """Split a comma list, ignoring commas inside quotes or angle brackets."""
    out, cur, quote, angle = [], [], False, False
    for ch in value:
        if ch == '"':
            quote = not quote
        elif ch == "<" and not quote:
            angle = True
        elif ch == ">" and not quote:
            angle = False
        if ch == "," and not quote and not angle:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [v for v in out if v]


def find_header_end(data: bytes) -> tuple[int, int] | None:
    """Offset of the blank line ending the header block and its length, or None."""
    i = data.find(b"\r\n\r\n")
    j = data.find(b"\n\n")
    if i < 0 and j < 0:
        return None
    if i >= 0 and (j < 0 or i <= j):
        return i, 4
    return j, 2


def parse_message(data: bytes, *, stream: bool = False) -> SipMessage:
    """Parse one complete SIP message (a UDP datagram or one framed TCP message)."""
    if len(data) > MAX_MESSAGE:
        raise ParseError(f"SIP message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    data = data.lstrip(b"\r\n")  # keepalive CRLFs before a message are allowed
    if not data:
        raise ParseError("SIP message is empty")
    end = find_header_end(data)
    if end is None:
        head, body = data, b""
    else:
        head, body = data[: end[0]], data[end[0] + end[1]:]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        try:  # some Chinese NVRs put GBK display names into From/To
            text = head.decode("gb18030")
        except UnicodeDecodeError:
            raise ParseError(f"SIP header block is neither UTF-8 nor GB18030 (byte {err.start})") from err
    lines = text.replace("\r\n", "\n").split("\n")
    msg = _parse_start_line(lines[0])
    raw: list[tuple[str, str]] = []
    for no, line in enumerate(lines[1:], start=2):
        if line[:1] in (" ", "\t"):
            if not raw:
                raise ParseError(f"SIP line {no}: continuation line before any header")
            raw[-1] = (raw[-1][0], raw[-1][1] + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name or not _TOKEN.match(name):
            raise ParseError(f"SIP line {no}: {line[:60]!r} is not 'Name: value'")
        raw.append((name, value.strip()))
        if len(raw) > MAX_HEADERS:
            raise ParseError(f"SIP message has more than {MAX_HEADERS} headers")
    for name, value in raw:
        cname = canonical_name(name)
        if cname in LIST_HEADERS:
            for item in _split_list(value):
                msg.headers.append((cname, item))
        else:
            msg.headers.append((cname, value))
    clen = msg.get("Content-Length")
    if clen is not None:
        if not clen.isdigit() or len(clen) > 7:
            raise ParseError(f"SIP Content-Length {clen[:20]!r} is not a number")
        n = int(clen)
        if n > len(body):
            raise ParseError(f"SIP Content-Length {n} exceeds the {len(body)} body bytes received")
        body = body[:n]
    elif stream:
        raise ParseError("SIP message over TCP lacks Content-Length")
    msg.body = body
    for required in ("Call-ID", "CSeq", "From", "To"):
        if msg.get(required) is None:
            raise ParseError(f"SIP {_describe(msg)} lacks the {required} header")
    num, method = msg.cseq
    if msg.is_request and method != msg.method and not (msg.method == "ACK" or msg.method == "CANCEL"):
        raise ParseError(f"SIP CSeq method {method} does not match request method {msg.method}")
    return msg


def _describe(msg: SipMessage) -> str:
    return f"request {msg.method}" if msg.is_request else f"response {msg.status}"


def _parse_start_line(line: str) -> SipMessage:
    line = line.strip()
    m = _STATUS.match(line)
    if m:
        return SipMessage(status=int(m.group(1)), reason=m.group(2) or "")
    m = _REQUEST.match(line)
    if m:
        return SipMessage(method=m.group(1).upper(), uri=m.group(2))
    raise ParseError(f"SIP start line {line[:60]!r} is neither a request nor a status line")


def serialize(msg: SipMessage) -> bytes:
    """Encode a message; Content-Length always reflects the body."""
    start = f"{msg.method} {msg.uri} SIP/2.0" if msg.is_request else f"SIP/2.0 {msg.status} {msg.reason}".rstrip()
    lines = [start]
    for name, value in msg.headers:
        if name.lower() != "content-length":
            lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(msg.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + msg.body


class SipStreamFramer:
    """Cuts a TCP byte stream into SIP messages by the header end and Content-Length."""

    def __init__(self, max_buffer: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._max = max_buffer

    def feed(self, data: bytes) -> list[bytes]:
        """Return every complete message; raises ParseError (and drops the buffer) on garbage."""
        self._buf += data
        out: list[bytes] = []
        while True:
            while self._buf[:2] == b"\r\n":  # RFC 5626 CRLF keepalives
                del self._buf[:2]
            end = find_header_end(bytes(self._buf))
            if end is None:
                if len(self._buf) > self._max:
                    self._buf.clear()
                    raise ParseError(f"SIP stream: no header end within {self._max} bytes")
                return out
            head = bytes(self._buf[: end[0]])
            m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d{1,7})[ \t]*$", head)
            if m is None:
                self._buf.clear()
                raise ParseError("SIP message over TCP lacks Content-Length")
            total = end[0] + end[1] + int(m.group(1))
            if total > self._max:
                self._buf.clear()
                raise ParseError(f"SIP stream message of {total} bytes exceeds {self._max}")
            if len(self._buf) < total:
                return out
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]


# --- small helpers for header values -------------------------------------------------------

def header_params(value: str) -> tuple[str, dict[str, str]]:
    """`<sip:a@b>;tag=x;rport` -> ('<sip:a@b>', {'tag': 'x', 'rport': ''})."""
    main, params = value, ""
    gt = value.find(">")
    semi = value.find(";", gt + 1 if gt >= 0 else 0)
    if semi >= 0:
        main, params = value[:semi], value[semi + 1:]
    out: dict[str, str] = {}
    for p in params.split(";"):
        k, _, v = p.partition("=")
        if k.strip():
            out[k.strip().lower()] = v.strip().strip('"')
    return main.strip(), out


def uri_of(value: str) -> str:
    """The URI inside a name-addr (`"x" <sip:u@h>;tag=1` -> `sip:u@h`)."""
    main, _ = header_params(value)
    if "<" in main and ">" in main:
        return main[main.index("<") + 1: main.index(">")]
    return main


def uri_user(value: str) -> str:
    """User part of a SIP URI or name-addr (`<sip:3402...@3402>` -> `3402...`)."""
    uri = uri_of(value)
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split("@", 1)[0] if "@" in rest else ""


def uri_hostport(value: str) -> tuple[str, int | None]:
    uri = uri_of(value)
    rest = uri.split(":", 1)[1] if uri.lower().startswith(("sip:", "sips:")) else uri
    rest = rest.split("@", 1)[-1].split(";", 1)[0]
    host, _, port = rest.partition(":")
    return host, (int(port) if port.isdigit() and len(port) <= 5 else None)


def tag_of(value: str) -> str | None:
    return header_params(value)[1].get("tag")
