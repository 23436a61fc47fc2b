#!/usr/bin/env python3
"""Fuzz the GB/T 28181 parsers with generated and mutated inputs seeded from real captures.

    python scripts/fuzz_parsers.py                 # 100,000 inputs per parser
    python scripts/fuzz_parsers.py -n 5000 --only sip,ps
    python scripts/fuzz_parsers.py --record        # re-record tests/data/gb/captures (emulator + sipp)

Each input must either parse or raise ParseError; anything else, or an input taking longer
than --limit seconds, is a failure (saved under --failures). Prints inputs and seconds per parser.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.capture.gb28181 import digest, manscdp, ps, rtp, sdp, sip  # noqa: E402
from edge_agent.capture.gb28181.framing import TcpRtpDeframer  # noqa: E402
from edge_agent.errors import ParseError  # noqa: E402

CAPTURES = ROOT / "tests" / "data" / "gb" / "captures"
TOKENS = [b"\r\n", b"\r\n\r\n", b":", b";", b",", b'"', b"<", b">", b"=", b"$", b"\x00\x00\x01\xba",
          b"\x00\x00\x01\xe0", b"\x00\x00\x01\xbc", b"\xff\xff", b"\x00\x00", b"Content-Length: 99999",
          b"l: 0", b"v: SIP/2.0/UDP x", b"<?xml version=\"1.0\" encoding=\"GB18030\"?>", b"<Item>", b"</Item>",
          b"<!DOCTYPE x>", b"\xb3\xf8\xb7\xbf", b"y=", b"m=video 0 TCP/RTP/AVP 96", b"a=setup:active", b"qop=",
          b"\\", b"\x80", b"\x90\x60"]


# --- seeds ---------------------------------------------------------------------------------------

def _bodies(messages: list[bytes]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    sdps, xmls, auths = [], [], []
    for raw in messages:
        try:
            m = sip.parse_message(raw)
        except ParseError:
            continue
        ctype = (m.get("Content-Type") or "").lower()
        if "sdp" in ctype and m.body:
            sdps.append(m.body)
        elif "manscdp" in ctype and m.body:
            xmls.append(m.body)
        for h in ("WWW-Authenticate", "Authorization"):
            if m.get(h):
                auths.append((m.get(h) or "").encode())
    return sdps, xmls, auths


def load_seeds() -> dict[str, list[bytes]]:
    def files(pattern: str) -> list[bytes]:
        return [p.read_bytes() for p in sorted(CAPTURES.glob(pattern))]

    sips = files("sip_*.txt")
    sdps, xmls, auths = _bodies(sips)
    xmls.append(manscdp.build_catalog_response(7, "64050200001180000001", 2, [
        manscdp.CatalogItem("64050200001310000001", name="后厨灶台", status="ON")], encoding="GB18030"))
    xmls.append(manscdp.build_keepalive(3, "64050200001180000001", encoding="UTF-8"))
    rtps = files("rtp_*.bin")
    seeds = {
        "sip": sips, "sip_stream": [b"".join(sips[:4])], "sdp": sdps, "manscdp": xmls, "digest": auths,
        "rtp": rtps, "reorder": [bytes(range(0, 64)), bytes([5, 4, 3, 2, 1, 0] * 5), b"\xff\xfe\x00\x01"],
        "framing": files("tcp_*.bin"), "ps": files("ps_*.bin"),
    }
    empty = [k for k, v in seeds.items() if not v]
    if empty:
        raise SystemExit(f"no seeds for {empty}: run with --record first")
    return seeds


# --- targets: each must return normally or raise ParseError ---------------------------------------

def _chunks(data: bytes, rnd_seed: int) -> list[bytes]:
    r = random.Random(rnd_seed)
    out, i = [], 0
    while i < len(data):
        n = r.randint(1, 1500)
        out.append(data[i: i + n])
        i += n
    return out


def t_sip(data: bytes) -> None:
    m = sip.parse_message(data)
    sip.parse_message(m.to_bytes())  # the serializer's output must parse again


def t_sip_stream(data: bytes) -> None:
    f = sip.SipStreamFramer()
    for c in _chunks(data, len(data)):
        for msg in f.feed(c):
            with contextlib.suppress(ParseError):
                sip.parse_message(msg, stream=True)


def t_sdp(data: bytes) -> None:
    s = sdp.parse_sdp(data)
    sdp.parse_sdp(sdp.serialize_sdp(s))


def t_manscdp(data: bytes) -> None:
    manscdp.parse_manscdp(data)


def t_digest(data: bytes) -> None:
    text = data.decode("latin-1")
    with contextlib.suppress(ParseError):
        digest.parse_challenge(text)
    c = digest.parse_credentials(text)
    digest.verify(c, password="x", method="REGISTER")


def t_rtp(data: bytes) -> None:
    p = rtp.parse_rtp(data)
    assert rtp.parse_rtp(rtp.build_rtp(p)).payload == p.payload


def t_reorder(data: bytes) -> None:
    buf = rtp.ReorderBuffer(window=8)
    out = []
    for i in range(0, len(data) - 1, 2):
        seq = (data[i] << 8 | data[i + 1]) & 0xFFFF
        out += buf.push(rtp.RtpPacket(96, seq, 0, 1, b""))
    out += buf.flush()
    assert len(buf._held) == 0
    seqs = [p.seq for p in out]
    assert len(seqs) == len(set(seqs)) or len(seqs) > 0  # duplicates dropped unless a resync happened


def t_framing(data: bytes) -> None:
    for mode in ("auto", "4571", "interleaved"):
        d = TcpRtpDeframer(mode)
        try:
            for c in _chunks(data, len(data)):
                d.feed(c)
        except ParseError:
            pass


def t_ps(data: bytes) -> None:
    d = ps.PsDemuxer()
    for c in _chunks(data, len(data)):
        d.feed(c)  # the streaming demuxer resyncs; it must never raise
    d.end_of_frame()
    ps.demux_ps(data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "sip": t_sip, "sip_stream": t_sip_stream, "sdp": t_sdp, "manscdp": t_manscdp, "digest": t_digest,
    "rtp": t_rtp, "reorder": t_reorder, "framing": t_framing, "ps": t_ps,
}


# --- mutation ------------------------------------------------------------------------------------

def mutate(r: random.Random, seeds: list[bytes]) -> bytes:
    if r.random() < 0.05:
        return r.randbytes(r.randint(0, 300))
    b = bytearray(r.choice(seeds))
    for _ in range(r.randint(1, 4)):
        op = r.randrange(9)
        n = len(b)
        if op == 0 and n:
            i = r.randrange(n)
            b[i] ^= 1 << r.randrange(8)
        elif op == 1 and n:
            b[r.randrange(n)] = r.choice([0, 0xFF, 0x7F, 0x80, 0x24, 0x3A, 0x0D, 0x0A, 0x20, r.randrange(256)])
        elif op == 2:
            i = r.randint(0, n)
            b[i:i] = r.randbytes(r.randint(1, 8))
        elif op == 3 and n:
            i = r.randrange(n)
            del b[i: i + r.randint(1, 64)]
        elif op == 4 and n:
            i = r.randrange(n)
            j = min(n, i + r.randint(1, 64))
            b[i:i] = b[i:j] * r.randint(1, 4)
        elif op == 5 and n:
            del b[r.randrange(n):]
        elif op == 6:
            other = r.choice(seeds)
            i, j = r.randint(0, n), r.randint(0, len(other))
            b = b[:i] + other[j:]
        elif op == 7:
            i = r.randint(0, n)
            b[i:i] = r.choice(TOKENS)
        elif op == 8 and n >= 4:
            i = r.randrange(n - 3)
            b[i: i + 2] = r.choice([b"\xff\xff", b"\x00\x00", b"\x00\x01", b"\x7f\xff"])
    return bytes(b)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def fuzz(name: str, seeds: list[bytes], n: int, limit: float, seed: int, failures: Path) -> dict:
    target = TARGETS[name]
    r = random.Random(f"{seed}-{name}")
    signal.signal(signal.SIGALRM, _alarm)
    stats = {"inputs": 0, "parse_errors": 0, "failures": 0, "max_ms": 0.0}
    t0 = time.perf_counter()
    inputs = list(seeds) + [b""]
    for i in range(n):
        data = inputs[i] if i < len(inputs) else mutate(r, seeds)
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            target(data)
        except ParseError:
            stats["parse_errors"] += 1
        except Hang:
            stats["failures"] += 1
            _save(failures, name, i, data, f"took more than {limit}s")
        except Exception as err:  # noqa: BLE001 - the point is to catch anything unexpected
            stats["failures"] += 1
            _save(failures, name, i, data, repr(err))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        stats["max_ms"] = max(stats["max_ms"], (time.perf_counter() - start) * 1000)
        stats["inputs"] += 1
    stats["seconds"] = time.perf_counter() - t0
    return stats


def _save(failures: Path, name: str, i: int, data: bytes, why: str) -> None:
    failures.mkdir(parents=True, exist_ok=True)
    (failures / f"{name}_{i}.bin").write_bytes(data)
    print(f"FAIL {name} input {i}: {why}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="inputs per parser")
    ap.add_argument("--only", default="", help="comma-separated parser names")
    ap.add_argument("--limit", type=float, default=1.0, help="seconds allowed per input")
    ap.add_argument("--seed", type=int, default=28181)
    ap.add_argument("--failures", type=Path, default=Path("fuzz-failures"))
    ap.add_argument("--record", action="store_true", help="re-record captures from the emulator and sipp")
    args = ap.parse_args(argv)
    if args.record:
        record(CAPTURES)
        return 0
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    seeds = load_seeds()
    names = [x for x in args.only.split(",") if x] or list(TARGETS)
    total_fail = 0
    print(f"{'parser':<12}{'inputs':>9}{'ParseError':>12}{'failures':>10}{'seconds':>9}{'max ms':>9}")
    for name in names:
        s = fuzz(name, seeds[name], args.n, args.limit, args.seed, args.failures)
        total_fail += s["failures"]
        print(f"{name:<12}{s['inputs']:>9}{s['parse_errors']:>12}{s['failures']:>10}{s['seconds']:>9.1f}"
              f"{s['max_ms']:>9.1f}", flush=True)
    return 1 if total_fail else 0


# --- recording seeds from real peers ------------------------------------------------------------

def record(outdir: Path) -> None:
    """Capture SIP from the device emulator and sipp talking to GbSipServer, plus RTP/PS/TCP samples."""
    import asyncio
    import re
    import shutil
    import subprocess
    import tempfile

    from edge_agent.capture.gb28181 import GbSipServer
    from edge_agent.capture.gb28181.framing import frame_4571, frame_interleaved
    from edge_agent.capture.gb28181.manscdp import CatalogItem
    from edge_agent.capture.gb28181.psmux import mux_access_unit
    from edge_agent.config import GbConfig
    from tests.support.gb_device_emulator import (
        EmulatorConfig,
        GbDeviceEmulator,
        is_keyframe,
        load_h264_units,
        packetize,
    )
    from tests.test_gb_emulator import free_port

    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.iterdir():
        old.unlink()
    tmp = Path(tempfile.mkdtemp())
    units = load_h264_units(tmp)
    sips: list[bytes] = []
    device = "64050200001180000001"

    async def run() -> None:
        cfg = GbConfig(host="127.0.0.1", port=free_port(), keepalive_timeout_s=5, media_port_range=(0, 0))
        server = GbSipServer(cfg, passwords={"*": "secret"}, capture=lambda kind, data: sips.append(data))
        await server.start()
        chans = [CatalogItem(f"6405020000131000000{i}", name=f"后厨{i}", status="ON") for i in (1, 2)]
        for transport in ("udp", "tcp"):
            emu = GbDeviceEmulator(EmulatorConfig("127.0.0.1", cfg.port, device, "secret", transport=transport,
                                                  channels=chans, units=units[:5], bye_after_clip=False))
            await emu.start()
            await emu.register()
            emu.start_keepalives()
            await asyncio.sleep(0.5)
            sess = await server.invite(chans[0].device_id, "udp" if transport == "udp" else "tcp_passive")
            await asyncio.sleep(0.3)
            await server.bye(sess)
            await emu.register(expires=0)
            await emu.stop()
        msgs = tmp / "sipp.log"
        scen = ROOT / "tests" / "data" / "gb"
        subprocess.run(["sipp", f"127.0.0.1:{cfg.port}", "-sf", str(scen / "sipp_register_keepalive.xml"),
                        "-oocsf", str(scen / "sipp_out_of_call.xml"), "-m", "1", "-i", "127.0.0.1",
                        "-p", str(free_port()), "-au", device, "-ap", "secret", "-key", "device_id", device,
                        "-key", "server_id", cfg.server_id, "-key", "realm", cfg.realm, "-nostdin",
                        "-timeout", "10s", "-trace_msg", "-message_file", str(msgs)],
                       cwd=tmp, capture_output=True, check=False) if shutil.which("sipp") else None
        await server.stop()
        if msgs.exists():
            for chunk in re.split(r"-{10,}[^\n]*\n(?:UDP|TCP) message[^\n]*\n\n", msgs.read_text()):
                if chunk.strip():
                    sips.append(chunk.lstrip("\n").encode())

    # Run the recorder in a thread-free event loop; GbSipServer and the emulator share it.
    asyncio.run(run())
    for i, data in enumerate(sips):
        (outdir / f"sip_{i:03d}.txt").write_bytes(data)
    frames = packetize(units[:4], 0x12345678)
    pkts = frames[0][:6] + [f[0] for f in frames[1:]] + [frames[0][-1]]
    for i, p in enumerate(pkts):
        (outdir / f"rtp_{i:03d}.bin").write_bytes(p)
    packs = [mux_access_unit(au, 3003 * n, keyframe=is_keyframe(au)) for n, au in enumerate(units[:3])]
    for i, pk in enumerate(packs[1:]):
        (outdir / f"ps_{i:03d}.bin").write_bytes(pk)
    (outdir / "ps_key.bin").write_bytes(packs[0][:3000])  # the key frame pack, truncated: keeps seeds small
    (outdir / "tcp_4571.bin").write_bytes(b"".join(frame_4571(p) for p in frames[1] + frames[2]))
    (outdir / "tcp_interleaved.bin").write_bytes(b"".join(frame_interleaved(p) for p in frames[1] + frames[2]))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"recorded {len(sips)} SIP messages, {len(pkts)} RTP packets, {len(packs)} PS packs into {outdir}")


if __name__ == "__main__":
    sys.exit(main())
