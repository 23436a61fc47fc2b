"""MQTT ingest fuzz: generated and mutated messages of every kind the receiver ingests, each with what
the contract says must happen to it (no tests here; tests/test_ingest_fuzz.py and scripts/fuzz_ingest.py
use it).

A `Case` is one MQTT message (topic, payload) and its expectation:
- "stored": valid; it must be stored (or recognised as a repeat), never rejected;
- "rejected": invalid by the contract (docs/mqtt.md, bk_contract); it must be rejected with a reason;
- "any": valid by the contract's schema, so the receiver may store it or refuse it by a rule of its
  own, but it must not break ingest.

`CaseMaker(rng).round(n)` makes about `n` messages: valid messages of every kind (the anchors that
must all be stored exactly once) interleaved with mutated ones — JSON payloads with wrong types,
missing and unknown fields, odd unicode, huge numbers and dates, deep nesting, broken bytes, payload
and topic devices that differ, unknown devices, malformed topics — and media chunk sets sent out of
order, overlapping, with a sha256 or size that lies, bytes that are not their content type, headers
that disagree, reused media ids. Expectations of JSON messages come from the contract's own models
(`json_expect`); those of media chunks from `simulate_media`, a model of the chunk rules in
docs/mqtt.md (tests/support/ingest_fuzz_media.py). `judge` (tests/support/ingest_fuzz_check.py)
compares a run with them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from bk_contract import Alert, CommandResult, Status, Telemetry, TopicError, parse_topic, topic
from support.ingest_fuzz_media import (
    ARABIC_INDIC,
    LIMITS,
    MEDIA_TYPES,
    MediaChunk,
    break_set,
    chunk_set,
    media_content,
    media_topic,
    simulate_media,
)

DEV_A, DEV_B = "64050200001180000701", "64050200001180000702"  # registered, in two canteens
UNKNOWN = "64050200001180000799"  # well-formed, never registered
REGISTERED = (DEV_A, DEV_B)
MODELS: dict[str, type[BaseModel]] = {"alert": Alert, "status": Status, "telemetry": Telemetry,
                                      "cmd/result": CommandResult}
TYPES = ("phone_use", "animal", "crowding", "no_mask", "smoking", "fire", "camera_offline")
WEIRD_STRINGS = ["", " ", "后厨一号", "😀" * 8, "\u202eRTL", "a\u0000b", "e\u0301", "\ufeffBOM", "x" * 520, "\\",
                 '"', "%s%n", "<script>alert(1)</script>", "../../etc/passwd", "null", "\ud800", "١٢٣", "ＡＢＣ"]
WEIRD_VALUES: list[Any] = [None, True, False, 0, -1, 1, 2**31, 2**63 - 1, 2**63, 2**64 + 1, -(2**63) - 1, 1.5, -0.0,
                           1e308, 1e-308, "", "1", "true", [], [1, 2, 3], {}, {"a": 1}, "2026-03-01T08:00:00Z"]
SENTINEL = "@@fuzz-literal@@"
WEIRD_DATES: list[Any] = ["2026-13-01T00:00:00Z", "2026-02-30T08:00:00Z", "9999-12-31T23:59:59-14:00",
                          "0001-01-01T00:00:00+14:00", "2026-03-01T08:00:00", "2026-03-01", "now", "1700000000",
                          1700000000, "2026-03-01T08:00:00+25:00", "２０２６-03-01T08:00:00Z", "2026-03-01T08:00:00.123456789Z"]


@dataclass(frozen=True)
class Case:
    topic: str
    payload: bytes
    expect: str  # "stored" | "rejected" | "any"
    label: str  # the mutation, for failure messages and the script's counts
    anchor: tuple[str, str, Any, dict[str, Any]] | None = None  # a valid message: (kind, device, id, columns it
    # must leave in its row), checked after the run


def json_expect(topic_name: str, payload: bytes, registered: tuple[str, ...] = REGISTERED) -> str:
    """What the contract says about a JSON message: "rejected", or "any" when its schema accepts it."""
    try:
        parsed = parse_topic(topic_name)
    except (TopicError, ValueError):
        return "rejected"
    if parsed.device_id not in registered or parsed.kind not in MODELS or len(payload) > LIMITS["alert_json_bytes"]:
        return "rejected"
    try:
        msg = MODELS[parsed.kind].model_validate_json(payload)
    except ValidationError:
        return "rejected"
    return "any" if getattr(msg, "device_id", parsed.device_id) == parsed.device_id else "rejected"


@dataclass
class CaseMaker:
    """Makes rounds of cases from one random generator (a seed makes a round reproducible)."""

    rng: random.Random
    serial: int = 0
    done_media: dict[tuple[str, str], str] = field(default_factory=dict)  # (device, media id) -> sha256 stored
    absent_media: set[tuple[str, str]] = field(default_factory=set)  # (device, media id) that must not be stored

    def _id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial:07d}"

    # -- valid messages ----------------------------------------------------------------------
    def alert_obj(self, device: str, **extra: Any) -> dict[str, Any]:
        r = self.rng
        obj: dict[str, Any] = {
            "v": 1, "id": self._id("V"), "device_id": device, "camera_id": r.choice(["cam1", "cam-2", "c.3"]),
            "type": r.choice(TYPES), "level": r.choice(["info", "warning", "critical"]),
            "state": r.choice(["start", "update", "end"]), "rev": r.randrange(0, 50),
            "started_at": f"2026-03-{r.randrange(1, 29):02d}T0{r.randrange(0, 10)}:00:00+08:00",
            "score": round(r.random(), 3),
            "boxes": [{"label": "person", "score": 0.8, "box": [1.0, 2.0, 30.5, 40.0], "track_id": r.randrange(100)}
                      for _ in range(r.randrange(3))],
            "frame_size": [640, 360], "detail": r.choice(["persons=2", "人员聚集 9 人", ""]),
        }
        return obj | extra

    def status_obj(self, device: str) -> dict[str, Any]:
        r = self.rng
        return {"v": 1, "device_id": device, "online": r.random() < 0.9, "version": "0.1.0",
                "ts": "2026-03-01T08:00:00Z", "problems": [],
                "cameras": [{"id": f"cam{i}", "name": "后厨", "state": r.choice(["online", "offline", "degraded"]),
                             "fps": round(r.random() * 10, 2), "reconnects": r.randrange(5)} for i in range(r.randrange(1, 4))]}

    def telemetry_obj(self, device: str) -> dict[str, Any]:
        r = self.rng
        return {"v": 1, "device_id": device, "ts": "2026-03-01T08:00:05Z", "fps": {"cam1": 5.0},
                "cpu_percent": round(r.random() * 100, 1), "outbox_depth": r.randrange(1000), "budget_bps": 64000.0}

    def cmd_result_obj(self) -> dict[str, Any]:
        ok = self.rng.random() < 0.7
        return {"v": 1, "id": self._id("C"), "ok": ok, "error": "" if ok else "摄像头不可用"}

    def valid(self) -> Case:
        """A valid JSON message of a random kind from a registered device."""
        device = self.rng.choice(REGISTERED)
        kind = self.rng.choice(("alert", "alert", "status", "telemetry", "cmd/result"))
        obj = {"alert": lambda: self.alert_obj(device), "status": lambda: self.status_obj(device),
               "telemetry": lambda: self.telemetry_obj(device), "cmd/result": self.cmd_result_obj}[kind]()
        anchor = (kind, device, obj.get("id"), {})
        return Case(topic(device, kind), _dump(obj, self.rng), "stored", f"valid {kind}", anchor)

    def alert_revisions(self) -> list[Case]:
        """An event's life (start, a later and an older revision) and another device reusing its id."""
        r = self.rng
        device = r.choice(REGISTERED)
        other = DEV_B if device == DEV_A else DEV_A
        first = self.alert_obj(device, state="start", rev=1)
        name = topic(device, "alert")
        later = first | {"state": "end", "rev": 3, "ended_at": "2026-03-01T09:00:00+08:00", "score": 0.5}
        cases = [Case(name, _dump(first, r), "stored", "alert start", ("alert", device, first["id"], {})),
                 Case(name, _dump(later, r), "stored", "alert later revision",
                      ("alert", device, first["id"], {"rev": 3, "state": "end"})),
                 Case(name, _dump(first | {"rev": 2, "state": "update"}, r), "stored", "alert older revision")]
        stolen = first | {"device_id": other, "rev": 9, "type": "fire", "detail": "not mine"}
        cases.insert(r.randrange(2, 4), Case(topic(other, "alert"), _dump(stolen, r), "rejected",
                                             "alert reusing another device's alert id"))
        return cases

    # -- mutated JSON ------------------------------------------------------------------------
    def mutated_json(self) -> Case:
        r = self.rng
        device = r.choice(REGISTERED)
        kind = r.choice(tuple(MODELS))
        obj = {"alert": lambda: self.alert_obj(device), "status": lambda: self.status_obj(device),
               "telemetry": lambda: self.telemetry_obj(device), "cmd/result": self.cmd_result_obj}[kind]()
        how, topic_name, payload = self._mutate(kind, device, obj)
        return Case(topic_name, payload, json_expect(topic_name, payload), f"{kind}: {how}")

    def _mutate(self, kind: str, device: str, obj: dict[str, Any]) -> tuple[str, str, bytes]:
        r = self.rng
        name = topic(device, kind)
        key = r.choice(sorted(obj))
        how = r.choice(("value", "value", "string", "drop", "unknown", "date", "nonfinite", "deep", "long list",
                        "bytes", "bytes", "device", "topic", "padding"))
        if how == "value":
            obj[key] = r.choice(WEIRD_VALUES)
        elif how == "string":
            obj[key] = r.choice(WEIRD_STRINGS)
        elif how == "drop":
            del obj[key]
        elif how == "unknown":
            obj[r.choice(["extra", "Device_Id", "__proto__", "v2"])] = r.choice(WEIRD_VALUES)
        elif how == "date":
            key = {"alert": r.choice(["started_at", "ended_at"]), "status": "ts", "telemetry": "ts"}.get(kind, key)
            obj[key] = r.choice(WEIRD_DATES)
        elif how == "deep":
            depth = r.choice([30, 300, 1500])
            obj[key] = SENTINEL
            text = _dump(obj, r, raw=True).replace(f'"{SENTINEL}"', "[" * depth + "]" * depth, 1)
            return f"{key} nested {depth} deep", name, text.encode()
        elif how == "nonfinite":
            lit = r.choice(["NaN", "Infinity", "-Infinity", "1e999"])
            key = {"alert": r.choice(["score", "rev"]), "status": "online", "telemetry": r.choice(["cpu_percent", "outbox_depth"])}.get(kind, "ok")
            obj[key] = SENTINEL
            return f"{key}={lit}", name, _dump(obj, r, raw=True).replace(f'"{SENTINEL}"', lit, 1).encode()
        elif how == "long list":
            if kind == "alert":
                obj["boxes"] = [{"label": "p", "score": 0.5, "box": [0, 0, 1, 1]}] * r.choice([200, 201])
            elif kind == "status":
                obj["problems"] = ["p"] * r.choice([20, 21])
            else:
                obj[key] = [0] * 3000
        elif how == "bytes":
            return self._break_bytes(name, _dump(obj, r))
        elif how == "device":
            other = r.choice([d for d in (*REGISTERED, UNKNOWN) if d != device])
            if r.random() < 0.5 and kind != "cmd/result":
                obj["device_id"] = other  # the payload names another device than the topic
                return f"payload device {other}", name, _dump(obj, r)
            return f"topic device {other}", topic(other, kind), _dump(obj | ({"device_id": other} if "device_id" in obj else {}), r)
        elif how == "topic":
            bad = r.choice([device[:-1], device + "0", "6405020000118000070a", "６" * 20, "", "dev ice", " ", "設備",
                            "٦٤٠٥٠٢٠٠٠٠١١٨٠٠٠٠٧٠١"])
            return f"topic device {bad!r}", f"bk/v1/{bad}/{kind}", _dump(obj, r)
        elif how == "padding":
            text = _dump(obj, r)
            size = LIMITS["alert_json_bytes"] + r.choice([0, 1])
            return f"padded to {size} bytes", name, text + b" " * max(0, size - len(text))
        return f"{how} {key}", name, _dump(obj, r)

    def _break_bytes(self, name: str, payload: bytes) -> tuple[str, str, bytes]:
        r = self.rng
        how = r.choice(("truncate", "flip", "insert", "bom", "utf16", "garbage", "empty", "scalar", "latin1"))
        if how == "truncate":
            return how, name, payload[:r.randrange(len(payload))]
        if how == "flip":
            b = bytearray(payload)
            for _ in range(r.randrange(1, 4)):
                b[r.randrange(len(b))] = r.randrange(256)
            return how, name, bytes(b)
        if how == "insert":
            at = r.randrange(len(payload))
            return how, name, payload[:at] + bytes(r.randrange(256) for _ in range(r.randrange(1, 8))) + payload[at:]
        if how == "bom":
            return how, name, b"\xef\xbb\xbf" + payload
        if how == "utf16":
            return how, name, payload.decode("utf-8").encode("utf-16")
        if how == "garbage":
            return how, name, payload + r.choice([b"}", b" x", b"\x00", b"{}"])
        if how == "empty":
            return how, name, b""
        if how == "scalar":
            return how, name, r.choice([b"null", b"[]", b"1", b'"str"', b"true", b"{}"])
        return how, name, payload.decode("utf-8").encode("latin-1", "replace") + b"\xe9"

    # -- media -------------------------------------------------------------------------------
    def media_scenario(self) -> list[Case]:
        """One media set of one device, valid or broken in one way, with what each chunk must get."""
        r = self.rng
        device = r.choice(REGISTERED)
        media_id = self._id("m")
        ctype = r.choice(MEDIA_TYPES)
        data = media_content(r, ctype)
        how = r.choice(("valid", "valid", "overlap", "overlap conflict", "sha lie", "size lie", "not its type",
                        "bad type", "index mismatch", "disagree", "malformed", "over limits", "reuse id",
                        "incomplete", "bad topic", "unknown device", "seq text"))
        if how == "not its type":
            data = b"<!doctype html><script>alert(document.cookie)</script>" + r.randbytes(r.randrange(100, 3000))
        chunks = chunk_set(data, ctype, LIMITS["chunk_data_bytes"])
        size = len(data)
        seq = break_set(r, how, chunks, ctype)
        expects, stored_sha = simulate_media(seq, self.done_media.get((device, media_id)))
        topic_dev, mid = device, media_id
        if how == "bad topic":
            shape = r.choice(["a.b", "é", "m" * 65, "has space", "x/y", "", "{seq}/extra", "none", "seq"])
            expects, stored_sha = ["rejected"] * len(seq), None
            cases = [Case(media_topic(device, shape, media_id, c.seq), c.payload(), "rejected", f"media: bad topic {shape!r}")
                     for c in seq]
            self.absent_media.add((device, media_id))
            return cases
        if how == "seq text" and stored_sha is not None:  # a copy of a chunk under another spelling of its index
            c = r.choice(chunks)
            text, expect = r.choice([(f"0{c.seq}", "any"), (str(c.seq).translate(ARABIC_INDIC), "any"),
                                     ("²", "rejected"), ("⁴", "rejected"), ("1234567", "rejected"), ("-1", "rejected"),
                                     (f"{c.seq}.0", "rejected"), (f" {c.seq}", "rejected"), ("0x1", "rejected")])
            seq.append(MediaChunk(c.seq, c.header, c.data, topic_seq=text))
            expects.append(expect)
        elif how == "unknown device":
            topic_dev, expects, stored_sha = UNKNOWN, ["rejected"] * len(seq), None
        if stored_sha is not None:
            self.done_media[(device, media_id)] = stored_sha
        cases = [Case(f"bk/v1/{topic_dev}/media/{mid}/{c.topic_seq or c.seq}", c.payload(), e, f"media: {how}"
                      + (f" ({c.bad})" if c.bad else ""))
                 for c, e in zip(seq, expects, strict=True)]
        if stored_sha is not None:  # the media must be there; an alert of its device may name it
            named = self.alert_obj(device, snapshot={"id": media_id, "sha256": stored_sha, "bytes": size,
                                                     "content_type": ctype})
            cases.append(Case(topic(device, "alert"), _dump(named, r), "stored", "valid alert naming its media",
                              ("alert", device, named["id"], {"snapshot_sha256": stored_sha})))
            other = DEV_B if device == DEV_A else DEV_A
            if r.random() < 0.5:  # another device naming this device's picture (the cross-canteen leak)
                cases.append(Case(topic(other, "alert"), _dump(self.alert_obj(other, snapshot={
                    "id": media_id, "sha256": stored_sha, "bytes": size, "content_type": ctype}), r), "rejected",
                    "alert naming another device's media"))
        else:
            self.absent_media.add((topic_dev, media_id))
        return cases

    # -- edges: every odd value on every field where one broke something once ---------------------------
    def edges(self) -> list[Case]:
        """Systematic cases: huge and odd numbers, dates at the ends of the calendar, NaN and Infinity, odd
        strings, each on a fresh valid message, on the fields that end up in SQLite columns or date math."""
        literals = ["NaN", "Infinity", "-Infinity", "1e999"]
        fields: dict[str, list[tuple[tuple[Any, ...], list[Any]]]] = {
            "alert": [(("rev",), WEIRD_VALUES), (("started_at",), WEIRD_DATES), (("ended_at",), WEIRD_DATES),
                      (("score",), literals), (("boxes", 0, "box", 0), literals), (("boxes", 0, "track_id"), WEIRD_VALUES),
                      (("frame_size", 0), WEIRD_VALUES), (("zone",), [[[0, 0], [1, 0], [1, 1]], [[2**63, 1]], [[]]]),
                      (("detail",), WEIRD_STRINGS), (("camera_id",), WEIRD_STRINGS)],
            "status": [(("cameras", 0, "reconnects"), WEIRD_VALUES), (("cameras", 0, "fps"), literals),
                       (("ts",), WEIRD_DATES), (("cameras", 0, "name"), WEIRD_STRINGS)],
            "telemetry": [(("outbox_depth",), WEIRD_VALUES), (("ts",), WEIRD_DATES), (("fps", "cam1"), literals),
                          (("outbox_dropped_by_priority",), [{"alert": 2**63}, {"x" * 300: 1}, {"": -1}])],
            "cmd/result": [(("ok",), WEIRD_VALUES), (("id",), WEIRD_STRINGS), (("error",), WEIRD_STRINGS)],
        }
        out = []
        for kind, targets in fields.items():
            for path, values in targets:
                for value in values:
                    device = self.rng.choice(REGISTERED)
                    obj = {"alert": lambda d=device: self.alert_obj(d, boxes=[{"label": "p", "score": 0.5,
                                                                              "box": [1.0, 2.0, 3.0, 4.0]}]),
                           "status": lambda d=device: self.status_obj(d),
                           "telemetry": lambda d=device: self.telemetry_obj(d),
                           "cmd/result": self.cmd_result_obj}[kind]()
                    literal = value in literals and isinstance(value, str)
                    _set(obj, path, SENTINEL if literal else value)
                    text = _dump(obj, self.rng, raw=True)
                    if literal:
                        text = text.replace(f'"{SENTINEL}"', value, 1)
                    payload = text.encode("utf-8", "surrogatepass")
                    name = topic(device, kind)
                    out.append(Case(name, payload, json_expect(name, payload), f"{kind} edge: {'.'.join(map(str, path))}"
                                                                                f" = {str(value)[:40]}"))
        return out

    # -- a round -----------------------------------------------------------------------------
    def round(self, n: int, edges: bool = False) -> list[Case]:
        """About `n` messages (plus `edges()` if asked): scenarios interleaved at random, each in its own order."""
        batches: list[list[Case]] = [[c] for c in self.edges()] if edges else []
        count = 0
        while count < n:
            pick = self.rng.random()
            if pick < 0.3:
                batch = [self.valid()]
            elif pick < 0.72:
                batch = [self.mutated_json()]
            elif pick < 0.75:
                batch = self.alert_revisions()
            else:
                batch = self.media_scenario()
            count += len(batch)
            batches.append(batch)
        self.rng.shuffle(batches)
        streams: list[Iterator[Case]] = [iter(b) for b in batches]
        out: list[Case] = []
        live = streams[: self.rng.randrange(1, 6)]
        rest = streams[len(live):]
        while live:
            s = self.rng.choice(live)
            case = next(s, None)
            if case is None:
                live.remove(s)
                if rest:
                    live.append(rest.pop(0))
                continue
            out.append(case)
        return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        obj = obj[step]
    obj[path[-1]] = value


def _dump(obj: dict[str, Any], rng: random.Random, raw: bool = False) -> Any:
    """JSON text of `obj`: sometimes \\u-escaped, sometimes UTF-8 (lone surrogates kept as escapes)."""
    text = json.dumps(obj, ensure_ascii=rng.random() < 0.5 or _has_surrogate(obj), allow_nan=True)
    return text if raw else text.encode("utf-8")


def _has_surrogate(obj: Any) -> bool:
    if isinstance(obj, str):
        return any(0xD800 <= ord(ch) <= 0xDFFF for ch in obj)
    if isinstance(obj, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has_surrogate(v) for v in obj)
    return False


