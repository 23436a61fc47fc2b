"""Client transactions and INVITE dialogs of the SIP server (requests the box sends to devices)."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

import structlog

from edge_agent.capture.gb28181.registry import Device
from edge_agent.capture.gb28181.rtp_receiver import MediaReceiver
from edge_agent.capture.gb28181.sdp import parse_sdp, play_offer, serialize_sdp
from edge_agent.capture.gb28181.sip import SipMessage, uri_of
from edge_agent.errors import ParseError, RetryLater

log = structlog.get_logger(__name__)
TRANSPORTS = ("udp", "tcp_passive", "tcp_active")
T1 = 0.5


@dataclass
class MediaSession:
    """One live INVITE dialog and its receiver; `receiver.units` is read by the decode thread."""

    channel_id: str
    device_id: str
    call_id: str
    from_tag: str
    to_header: str
    target: str
    cseq: int
    transport: str
    offered_ssrc: str
    answered_ssrc: str | None
    receiver: MediaReceiver

    @property
    def closed(self) -> bool:
        return self.receiver.closed


class DialogMixin:
    """Mixed into GbSipServer; relies on its cfg, registry, transport, _pending, _send, _spawn, _emit."""

    def __init__(self) -> None:
        self.sessions: dict[str, MediaSession] = {}
        self._proceeding: set[str] = set()
        self._ssrc_seq = 0

    def _provisional(self, branch: str) -> None:
        self._proceeding.add(branch)

    async def request(self, dev: Device, method: str, uri: str, to_user: str, *, body: bytes = b"",
                      ctype: str | None = None, call_id: str | None = None, from_tag: str | None = None,
                      to: str | None = None, cseq: int = 1, extra: list[tuple[str, str]] | None = None,
                      timeout: float | None = None) -> SipMessage:
        """Send a request to `dev` and wait for its final response (UDP retransmits per RFC 3261 T1)."""
        cfg = self.cfg  # type: ignore[attr-defined]
        timeout = timeout or self.request_timeout_s  # type: ignore[attr-defined]
        branch = "z9hG4bK" + secrets.token_hex(8)
        msg = SipMessage(method=method, uri=uri)
        msg.add("Via", f"SIP/2.0/{dev.transport.upper()} {cfg.media_ip}:{cfg.port};rport;branch={branch}")
        msg.add("From", f"<sip:{cfg.server_id}@{cfg.realm}>;tag={from_tag or secrets.token_hex(4)}")
        msg.add("To", to or f"<sip:{to_user}@{cfg.realm}>")
        msg.add("Call-ID", call_id or secrets.token_hex(12))
        msg.add("CSeq", f"{cseq} {method}")
        msg.add("Max-Forwards", "70")
        msg.add("Contact", f"<sip:{cfg.server_id}@{cfg.media_ip}:{cfg.port}>")
        msg.add("User-Agent", "BrightKitchen")
        for k, v in extra or []:
            msg.add(k, v)
        if ctype:
            msg.add("Content-Type", ctype)
        msg.body = body
        data = msg.to_bytes()
        fut: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        self._pending[branch] = fut  # type: ignore[attr-defined]
        retrans = None
        try:
            if not self._send(data, dev.addr, dev.transport):  # type: ignore[attr-defined]
                raise RetryLater(f"GB device {dev.device_id}: no connection to send {method}")
            if dev.transport == "udp":
                retrans = asyncio.create_task(self._retransmit(data, dev, branch, fut), name=f"gb-retrans-{branch}")
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError as err:
            raise RetryLater(f"GB device {dev.device_id} did not answer {method} within {timeout}s") from err
        finally:
            self._pending.pop(branch, None)  # type: ignore[attr-defined]
            self._proceeding.discard(branch)
            if retrans is not None:
                retrans.cancel()
            if not fut.done():
                fut.cancel()

    async def _retransmit(self, data: bytes, dev: Device, branch: str, fut: asyncio.Future) -> None:
        wait = T1
        while not fut.done():
            await asyncio.sleep(wait)
            if fut.done() or branch in self._proceeding:
                return
            self._send(data, dev.addr, dev.transport)  # type: ignore[attr-defined]
            wait = min(wait * 2, 4.0)

    def _new_ssrc(self) -> str:
        """GB SSRC: 0 (live) + digits 4-8 of the SIP domain + a 4-digit sequence."""
        self._ssrc_seq = (self._ssrc_seq + 1) % 10000
        return "0" + self.cfg.realm[3:8] + f"{self._ssrc_seq:04d}"  # type: ignore[attr-defined]

    async def invite(self, channel_id: str, transport: str = "udp", *, reorder_window: int = 64) -> MediaSession:
        """INVITE a channel to stream live video to a new receiver; raises RetryLater when it cannot."""
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}")
        cfg = self.cfg  # type: ignore[attr-defined]
        found = self.registry.channel(channel_id)  # type: ignore[attr-defined]
        if found is None:
            raise RetryLater(f"GB channel {channel_id} is not in any registered device's catalog")
        dev, item = found
        if not dev.online or not item.online:
            raise RetryLater(f"GB channel {channel_id} (device {dev.device_id}) is offline")
        ssrc = self._new_ssrc()
        rx = MediaReceiver(int(ssrc), reorder_window=reorder_window, channel_id=channel_id)
        port = 9  # RFC 4145: the discard port when we connect out (setup:active)
        if transport == "udp":
            port = await rx.listen_udp(cfg.host, cfg.media_port_range)
        elif transport == "tcp_passive":
            port = await rx.listen_tcp(cfg.host, cfg.media_port_range)
        offer = play_offer(server_id=cfg.server_id, ip=cfg.media_ip, port=port, ssrc=ssrc, transport=transport)
        call_id, from_tag = secrets.token_hex(12), secrets.token_hex(4)
        uri = f"sip:{channel_id}@{dev.addr[0]}:{dev.addr[1]}"
        try:
            resp = await self.request(dev, "INVITE", uri, channel_id, body=serialize_sdp(offer),
                                      ctype="APPLICATION/SDP", call_id=call_id, from_tag=from_tag,
                                      extra=[("Subject", f"{channel_id}:{ssrc},{cfg.server_id}:0")])
        except RetryLater:
            await rx.close()
            raise
        if resp.status != 200:
            await rx.close()
            raise RetryLater(f"GB channel {channel_id} answered INVITE with {resp.status} {resp.reason}")
        to_hdr = resp.get("To") or ""
        target = uri_of(resp.get("Contact") or "") or uri
        self._ack(dev, target, call_id, from_tag, to_hdr)
        sess = MediaSession(channel_id, dev.device_id, call_id, from_tag, to_hdr, target, 1, transport, ssrc,
                            None, rx)
        self.sessions[call_id] = sess
        try:
            answer = parse_sdp(resp.body)
            sess.answered_ssrc = answer.ssrc
            rx.rebind(answer.ssrc_int)
            if transport == "tcp_active":
                video = answer.video()
                await rx.connect_tcp(answer.address_for(video), video.port, self.request_timeout_s)  # type: ignore[attr-defined]
        except (ParseError, RetryLater) as err:
            log.warning("gb_invite_bad_answer", channel=channel_id, error=str(err))
            await self.bye(sess)
            raise RetryLater(f"GB channel {channel_id}: unusable INVITE answer: {err}") from err
        log.info("gb_invite_ok", channel=channel_id, transport=transport, port=port, ssrc=ssrc,
                 answered_ssrc=sess.answered_ssrc)
        return sess

    def _ack(self, dev: Device, target: str, call_id: str, from_tag: str, to_hdr: str) -> None:
        cfg = self.cfg  # type: ignore[attr-defined]
        ack = SipMessage(method="ACK", uri=target)
        ack.add("Via", f"SIP/2.0/{dev.transport.upper()} {cfg.media_ip}:{cfg.port};rport;branch=z9hG4bK{secrets.token_hex(8)}")
        ack.add("From", f"<sip:{cfg.server_id}@{cfg.realm}>;tag={from_tag}")
        ack.add("To", to_hdr)
        ack.add("Call-ID", call_id)
        ack.add("CSeq", "1 ACK")
        ack.add("Max-Forwards", "70")
        self._send(ack.to_bytes(), dev.addr, dev.transport)  # type: ignore[attr-defined]

    async def bye(self, sess: MediaSession) -> None:
        """End a session: BYE to the device (best effort) and close the receiver."""
        self.sessions.pop(sess.call_id, None)
        await sess.receiver.close()
        dev = self.registry.devices.get(sess.device_id)  # type: ignore[attr-defined]
        if dev is None or not dev.online:
            return
        sess.cseq += 1
        try:
            await self.request(dev, "BYE", sess.target, sess.channel_id, call_id=sess.call_id,
                               from_tag=sess.from_tag, to=sess.to_header, cseq=sess.cseq)
        except RetryLater as err:
            log.warning("gb_bye_unanswered", channel=sess.channel_id, error=str(err))

    def _on_bye(self, req: SipMessage, addr: tuple[str, int], transport: str) -> None:
        sess = self.sessions.pop(req.call_id, None)
        if sess is None:
            self._reply(req, addr, transport, 481, "Call/Transaction Does Not Exist")  # type: ignore[attr-defined]
            return
        self._reply(req, addr, transport, 200, "OK")  # type: ignore[attr-defined]
        self._spawn(sess.receiver.close(), f"gb-close-{sess.call_id}")  # type: ignore[attr-defined]
        self._emit("session_ended", sess.device_id, channel=sess.channel_id, by="device")  # type: ignore[attr-defined]
