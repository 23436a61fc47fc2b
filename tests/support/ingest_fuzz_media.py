"""Media chunk sets for the ingest fuzz: content of the contract's types, chunk sets broken in one way each,
and `simulate_media`, a model of the chunk rules of docs/mqtt.md that says what each chunk must get (no
tests here; tests/support/ingest_fuzz.py uses it)."""

from __future__ import annotations

import hashlib
import io
import random
import struct
from dataclasses import dataclass

LIMITS = {"alert_json_bytes": 4096, "chunk_data_bytes": 2048, "media_max_bytes": 65536}  # small: cheap oversize cases
MEDIA_TYPES = ("image/jpeg", "video/mp4")  # the contract's media types


@dataclass
class MediaChunk:
    """One chunk message of a media scenario before its expectation is known."""

    seq: int  # the topic's index
    header: tuple[int, int, int, str, str]  # index, total, size, sha256, content type
    data: bytes
    bad: str = ""  # why this message is invalid on its own (malformed, over a limit, bad type): "" if it is not
    raw: bytes | None = None  # the payload, when it is not a well-formed encoding of header + data
    topic_seq: str | None = None  # the topic's index text, when not str(seq)

    def payload(self) -> bytes:
        if self.raw is not None:
            return self.raw
        index, total, size, sha, ctype = self.header
        ct = ctype.encode("utf-8")
        return struct.pack(">4sIIQ32sB", b"BKM1", index, total, size, bytes.fromhex(sha), len(ct)) + ct + self.data


def looks_like(content_type: str, data: bytes) -> bool:
    """The contract's content check: JPEG starts with its SOI marker, MP4 with an `ftyp` box."""
    if content_type == "image/jpeg":
        return data[:3] == b"\xff\xd8\xff"
    return content_type == "video/mp4" and data[4:8] == b"ftyp"


def chunk_problem(ch: MediaChunk) -> str:
    """What is wrong with a well-formed chunk on its own, by docs/mqtt.md and the receiver's limits ("" if nothing)."""
    index, total, size, _sha, ctype = ch.header
    lim = LIMITS["chunk_data_bytes"]
    problems = [(index != ch.seq, "index differs from topic"), (size > LIMITS["media_max_bytes"], "media over limit"),
                (len(ch.data) > lim, "data over chunk limit"), (len(ch.data) > size, "data over size"),
                (total > max(1, size) or total * lim < size, "chunk count cannot carry size"),
                (ctype not in MEDIA_TYPES, "content type not allowed")]
    return next((why for bad, why in problems if bad), "")


def simulate_media(chunks: list[MediaChunk], done_sha: str | None = None) -> tuple[list[str], str | None]:
    """The chunk rules of docs/mqtt.md for one (device, media id): expectations in order, and the sha256
    of the media finally stored (None when nothing is). First copy of an index wins; the set is accepted
    only when its length and sha256 match and its bytes are its content type, else its chunks are dropped."""
    known: tuple[int, int, str, str] | None = None
    have: dict[int, bytes] = {}
    out = []
    for ch in chunks:
        if ch.bad or chunk_problem(ch):
            out.append("rejected")
            continue
        _index, total, size, sha, ctype = ch.header
        if done_sha is not None:
            out.append("stored" if sha == done_sha else "rejected")
            continue
        if known is not None and (total, size, sha, ctype) != known:
            out.append("rejected")
            continue
        known = (total, size, sha, ctype)
        if ch.seq in have:
            out.append("stored")
            continue
        have[ch.seq] = ch.data
        if len(have) < total:
            out.append("stored")
            continue
        blob = b"".join(have[i] for i in range(total))
        if len(blob) == size and hashlib.sha256(blob).hexdigest() == sha and looks_like(ctype, blob):
            done_sha = sha
            out.append("stored")
        else:
            known, have = None, {}
            out.append("rejected")
    return out, done_sha


def media_content(rng: random.Random, ctype: str) -> bytes:
    """Bytes that are what `ctype` says: a JPEG of noise (Pillow), or an ISO base media file (ftyp + mdat)."""
    if ctype == "video/mp4":  # an ISO base media file: ftyp box, then an mdat box of noise
        body = rng.randbytes(rng.randrange(1500, 7000))
        return (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + struct.pack(">I", 8 + len(body)) + b"mdat"
                + body)
    from PIL import Image
    side = rng.randrange(16, 72)
    img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def malformed(rng: random.Random, c: MediaChunk) -> MediaChunk:
    """A payload that is no chunk: short, wrong magic, impossible index/total, type length past the end."""
    r = rng
    p = c.payload()
    index, total, size, sha, ctype = c.header
    options = {
        "short header": p[:r.randrange(0, 53)],
        "bad magic": b"BKM2" + p[4:],
        "total 0": struct.pack(">4sIIQ32sB", b"BKM1", 0, 0, size, bytes.fromhex(sha), 0),
        "index >= total": struct.pack(">4sIIQ32sB", b"BKM1", total, total, size, bytes.fromhex(sha), 0) + c.data,
        "total > 100000": struct.pack(">4sIIQ32sB", b"BKM1", index, 100001, size, bytes.fromhex(sha), 0) + c.data,
        "type past end": struct.pack(">4sIIQ32sB", b"BKM1", index, total, size, bytes.fromhex(sha), 200) + b"x",
        "type not ASCII": struct.pack(">4sIIQ32sB", b"BKM1", index, total, size, bytes.fromhex(sha), 2) + b"\xff\xfe"
                          + c.data,
        "random bytes": r.randbytes(r.randrange(0, 400)),
    }
    what = r.choice(sorted(options))
    return MediaChunk(c.seq, c.header, c.data, bad=what, raw=options[what])


def over_limits(rng: random.Random, c: MediaChunk, ctype: str) -> MediaChunk:
    """A well-formed chunk over one of the receiver's limits."""
    r = rng
    index, total, size, sha, _ = c.header
    lim = LIMITS["chunk_data_bytes"]
    what = r.choice(["data over chunk limit", "media over limit", "too few chunks for size", "data over size"])
    if what == "data over chunk limit":
        return MediaChunk(c.seq, c.header, r.randbytes(lim + 1), bad=what)
    if what == "media over limit":
        return MediaChunk(c.seq, (index, total, LIMITS["media_max_bytes"] + 1, sha, ctype), c.data, bad=what)
    if what == "too few chunks for size":
        return MediaChunk(c.seq, (index, total, total * lim + 1, sha, ctype), c.data, bad=what)
    return MediaChunk(c.seq, (index, total, len(c.data) - 1, sha, ctype), c.data, bad=what)


def break_set(r: random.Random, how: str, chunks: list[MediaChunk], ctype: str) -> list[MediaChunk]:
    """The chunks of one media set in the order they are sent (shuffled), broken the way `how` names."""
    _index, _total, size, sha, _ctype = chunks[0].header
    seq = list(chunks)
    r.shuffle(seq)
    if how == "overlap":  # exact repeats, some right after their first copy
        for _ in range(r.randrange(1, 4)):
            seq.insert(r.randrange(len(seq) + 1), r.choice(chunks))
    elif how == "overlap conflict":  # the same index twice with different bytes
        victim = r.choice(chunks)
        at = seq.index(victim) + r.choice([0, 1])
        seq.insert(at, MediaChunk(victim.seq, victim.header, bytes(len(victim.data)) or b"\x00"))
    elif how in ("sha lie", "size lie"):
        lie = (size, f"{r.getrandbits(256):064x}") if how == "sha lie" else (size + r.choice([1, -1]), sha)
        seq = [MediaChunk(c.seq, (c.header[0], c.header[1], lie[0], lie[1], ctype), c.data) for c in seq]
    elif how == "bad type":
        bad = r.choice(["text/html", "image/png", "application/octet-stream", "IMAGE/JPEG", "", "image/jpeg; q=1",
                        "video/mp4 ", "图片/jpeg"])
        seq = [MediaChunk(c.seq, (*c.header[:4], bad), c.data, bad=f"content type {bad!r}") for c in seq]
    elif how == "index mismatch" and len(chunks) > 1:
        c = r.choice(chunks)
        seq.insert(r.randrange(len(seq) + 1), MediaChunk((c.seq + 1) % len(chunks), c.header, c.data,
                                                         bad="index differs from topic"))
    elif how == "disagree" and len(seq) > 1:
        c = seq[1]
        total, csize, csha = c.header[1], c.header[2], c.header[3]
        alt = r.choice([(total + 1, csize, csha, ctype), (total, csize, "0" * 64, ctype),
                        (total, csize, csha, MEDIA_TYPES[1 - MEDIA_TYPES.index(ctype)])])
        seq.insert(1, MediaChunk(c.seq, (c.header[0], *alt), c.data))
    elif how == "malformed":
        seq.insert(r.randrange(len(seq) + 1), malformed(r, r.choice(chunks)))
    elif how == "over limits":
        seq.insert(r.randrange(len(seq) + 1), over_limits(r, r.choice(chunks), ctype))
    elif how == "reuse id":
        other = media_content(r, ctype)
        seq += chunk_set(other, ctype, LIMITS["chunk_data_bytes"])
    elif how == "incomplete" and len(seq) > 1:
        seq.pop(r.randrange(len(seq)))
    return seq


ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def media_topic(device: str, shape: str, media_id: str, seq: int) -> str:
    """A media topic of a broken shape: a bad media id, a level too many or too few."""
    if shape == "none":
        return f"bk/v1/{device}/media"
    if shape == "seq":
        return f"bk/v1/{device}/media/{media_id}"
    if shape == "{seq}/extra":
        return f"bk/v1/{device}/media/{media_id}/{seq}/extra"
    return f"bk/v1/{device}/media/{shape}/{seq}"


def chunk_set(data: bytes, ctype: str, chunk: int) -> list[MediaChunk]:
    """`data` as the chunks the contract makes of it (bk_contract.split_media's layout), in index order."""
    sha = hashlib.sha256(data).hexdigest()
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] or [b""]
    return [MediaChunk(i, (i, len(pieces), len(data), sha, ctype), p) for i, p in enumerate(pieces)]
