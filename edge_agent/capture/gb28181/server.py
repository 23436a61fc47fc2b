"""GB/T 28181 SIP server of the box: devices REGISTER to it, send keepalives and catalogs, and are
INVITEd to stream a channel. All I/O runs on one asyncio loop; see docs/gb28181.md."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from datetime import datetime

import structlog

from edge_agent.capture.gb28181 import digest
from edge_agent.capture.gb28181.catalog import CatalogMixin
from edge_agent.capture.gb28181.dialog import DialogMixin
from edge_agent.capture.gb28181.manscdp import parse_manscdp
from edge_agent.capture.gb28181.registry import ChannelInfo, Device, DeviceRegistry, GbEvent
from edge_agent.capture.gb28181.sip import SipMessage, header_params, parse_message, tag_of, uri_user
from edge_agent.capture.gb28181.throttle import RegisterThrottle
from edge_agent.capture.gb28181.transport import SipTransport
from edge_agent.config import GbConfig, resolve_secret
from edge_agent.errors import ParseError, RetryLater

log = structlog.get_logger(__name__)
NONCE_TTL_S = 300.0
MAX_NONCES = 1024


class GbSipServer(DialogMixin, CatalogMixin):
    """The box as GB/T 28181 SIP server (UDP and TCP on `cfg.port`).

    `on_event(GbEvent)` is called on the loop thread for device_online / device_offline /
    catalog / registration_rejected / session_ended. `passwords` overrides the environment lookup
    (device id -> password, "*" for the global one); normally passwords come from `cfg`.
    """

    def __init__(self, cfg: GbConfig, on_event: Callable[[GbEvent], None] | None = None, *,
                 passwords: dict[str, str] | None = None, request_timeout_s: float = 5.0,
                 capture: Callable[[str, bytes], None] | None = None) -> None:
        DialogMixin.__init__(self)
        CatalogMixin.__init__(self)
        self.cfg = cfg
        self.on_event = on_event
        self.registry = DeviceRegistry()
        self.request_timeout_s = request_timeout_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self._passwords = passwords
        self._capture = capture
        self._nonces: dict[str, float] = {}
        self._pending: dict[str, asyncio.Future[SipMessage]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._sn = 0
        self.throttle = RegisterThrottle(cfg.register_fail_limit, cfg.register_fail_window_s)
        self.watchdog_at = 0.0  # monotonic time of the keepalive watchdog's last pass
        self.transport = SipTransport(cfg.host, cfg.port, self._on_data)

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.transport.start()
        self._spawn(self._watchdog(), "gb-keepalive-watchdog")

    async def stop(self) -> None:
        for sess in list(self.sessions.values()):
            with contextlib.suppress(asyncio.TimeoutError, RetryLater, OSError):
                await asyncio.wait_for(self.bye(sess), 2.0)
        # Python 3.11's wait_for can swallow a cancel that races a result, so cancel until done.
        pending = set(self._tasks)
        while pending:
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        await self.transport.stop()

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def port(self) -> int:
        return self.cfg.port

    # --- queries -------------------------------------------------------------------------------
    def channels(self) -> list[ChannelInfo]:
        return self.registry.channels()

    def devices(self) -> dict[str, Device]:
        return dict(self.registry.devices)

    def _emit(self, kind: str, device_id: str, **detail) -> None:
        log.info("gb_event", kind=kind, device=device_id, **detail)
        if self.on_event is not None:
            try:
                self.on_event(GbEvent(kind, device_id, detail))
            except Exception:  # a faulty callback must not stop the SIP server
                log.exception("gb_event_callback_failed", kind=kind, device=device_id)

    def _next_sn(self) -> int:
        self._sn += 1
        return self._sn

    # --- receive path --------------------------------------------------------------------------
    def _on_data(self, data: bytes, addr: tuple[str, int], transport: str) -> None:
        if self._capture is not None:
            self._capture("sip", data)
        if not data.strip(b"\r\n"):
            return  # CRLF keepalive
        try:
            msg = parse_message(data, stream=(transport == "tcp"))
        except ParseError as err:
            log.warning("sip_malformed", peer=f"{addr[0]}:{addr[1]}", transport=transport, error=str(err),
                        head=data[:60].decode("latin-1"))
            return
        try:
            if msg.is_request:
                self._on_request(msg, addr, transport)
            else:
                self._on_response(msg)
        except ParseError as err:
            log.warning("sip_bad_request", peer=f"{addr[0]}:{addr[1]}", method=msg.method, error=str(err))
            if msg.is_request and msg.method != "ACK":
                self._reply(msg, addr, transport, 400, "Bad Request")

    def _on_response(self, msg: SipMessage) -> None:
        vias = msg.get_all("Via")
        branch = header_params(vias[0])[1].get("branch", "") if vias else ""
        fut = self._pending.get(branch)
        if fut is not None and not fut.done():
            if msg.status and msg.status >= 200:
                fut.set_result(msg)
            else:
                self._provisional(branch)

    def _on_request(self, msg: SipMessage, addr: tuple[str, int], transport: str) -> None:
        method = msg.method
        if method == "REGISTER":
            self._on_register(msg, addr, transport)
        elif method == "MESSAGE":
            self._on_message(msg, addr, transport)
        elif method == "BYE":
            self._on_bye(msg, addr, transport)
        elif method == "ACK":
            return
        elif method in ("OPTIONS", "NOTIFY", "INFO"):
            self._reply(msg, addr, transport, 200, "OK")
        else:
            self._reply(msg, addr, transport, 405, "Method Not Allowed")

    def _reply(self, req: SipMessage, addr: tuple[str, int], transport: str, status: int, reason: str,
               extra: list[tuple[str, str]] | None = None, body: bytes = b"", ctype: str | None = None) -> None:
        resp = SipMessage(status=status, reason=reason)
        for v in req.get_all("Via"):
            resp.add("Via", v)
        resp.add("From", req.get("From") or "")
        to = req.get("To") or ""
        if tag_of(to) is None and status > 100:
            to = f"{to};tag={secrets.token_hex(4)}"
        resp.add("To", to)
        resp.add("Call-ID", req.call_id)
        resp.add("CSeq", req.get("CSeq") or "")
        resp.add("User-Agent", "BrightKitchen")
        for k, v in extra or []:
            resp.add(k, v)
        if ctype:
            resp.add("Content-Type", ctype)
        resp.body = body
        self._send(resp.to_bytes(), addr, transport)

    def _send(self, data: bytes, addr: tuple[str, int], transport: str) -> bool:
        if self._capture is not None:
            self._capture("sip_out", data)
        return self.transport.send(data, addr, transport)

    # --- REGISTER ------------------------------------------------------------------------------
    def _password_for(self, device_id: str) -> str | None:
        if self._passwords is not None:
            return self._passwords.get(device_id, self._passwords.get("*"))
        env = self.cfg.device_password_envs.get(device_id)
        if env:
            pw = resolve_secret(env)
            if pw is not None:
                return pw
        return resolve_secret(self.cfg.password_env)

    def _challenge(self, req: SipMessage, addr: tuple[str, int], transport: str, stale: bool = False) -> None:
        now = time.monotonic()
        if len(self._nonces) >= MAX_NONCES:
            self._nonces = {n: t for n, t in self._nonces.items() if now - t < NONCE_TTL_S}
            while len(self._nonces) >= MAX_NONCES:
                self._nonces.pop(next(iter(self._nonces)))
        nonce = secrets.token_hex(16)
        self._nonces[nonce] = now
        ch = digest.DigestChallenge(realm=self.cfg.realm, nonce=nonce, algorithm="MD5", qop=["auth"])
        hdr = ch.to_header() + (", stale=TRUE" if stale else "")
        self._reply(req, addr, transport, 401, "Unauthorized", [("WWW-Authenticate", hdr)])

    def _refuse_register(self, req: SipMessage, addr: tuple[str, int], transport: str, device_id: str,
                         reason: str, **detail) -> None:
        """403, and one warning and one `registration_rejected` event per burst of failures."""
        self._reply(req, addr, transport, 403, "Forbidden")
        burst = self.throttle.failed((addr[0], device_id))
        rlog = log.bind(device=device_id, peer=f"{addr[0]}:{addr[1]}", reason=reason, failures=burst.failures)
        if burst.failures == 1:
            rlog.warning("gb_register_refused", **detail)
            self._emit("registration_rejected", device_id, reason=reason, addr=f"{addr[0]}:{addr[1]}")
        else:
            rlog.debug("gb_register_refused_again", **detail)
        if burst.failures == self.throttle.limit:
            rlog.warning("gb_register_throttled", burst_s=round(burst.last - burst.first, 3),
                         refused_for_s=self.cfg.register_fail_window_s)

    def _on_register(self, req: SipMessage, addr: tuple[str, int], transport: str) -> None:
        device_id = uri_user(req.get("From") or "")
        if self.throttle.locked((addr[0], device_id)):
            self._reply(req, addr, transport, 403, "Forbidden")  # at once: no challenge, no digest
            return
        password = self._password_for(device_id)
        if password is None:
            self._refuse_register(req, addr, transport, device_id, "no password configured")
            return
        auth = req.get("Authorization")
        if auth is None:
            self._challenge(req, addr, transport)
            return
        creds = digest.parse_credentials(auth)
        issued = self._nonces.get(creds.nonce)
        if issued is None or time.monotonic() - issued > NONCE_TTL_S:
            self._challenge(req, addr, transport, stale=True)
            return
        if creds.username != device_id or not digest.verify(creds, password=password, method="REGISTER"):
            self._refuse_register(req, addr, transport, device_id, "wrong password", username=creds.username)
            return
        burst = self.throttle.succeeded((addr[0], device_id))
        if burst is not None:
            log.info("gb_register_ok_after_failures", device=device_id, failures=burst.failures,
                     refused_at_once=burst.refused)
        expires_hdr = req.get("Expires")
        if expires_hdr is None:
            expires_hdr = header_params(req.get("Contact") or "")[1].get("expires", "3600")
        expires = int(expires_hdr) if expires_hdr.isdigit() and len(expires_hdr) < 9 else 3600
        now_s = datetime.now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        extra = [("Date", now_s), ("Expires", str(expires))]
        if req.get("Contact"):
            extra.append(("Contact", req.get("Contact") or ""))
        self._reply(req, addr, transport, 200, "OK", extra)
        dev = self.registry.devices.get(device_id)
        if expires == 0:
            if dev is not None and dev.online:
                self._went_offline(dev, reason="unregistered")
            return
        if dev is None:
            dev = Device(device_id, transport, addr)
            self.registry.devices[device_id] = dev
        was_online = dev.online
        dev.transport, dev.addr, dev.online = transport, addr, True
        now = time.monotonic()
        dev.registered_at, dev.expires_at = now, now + expires
        dev.touch()
        if not was_online:
            self._emit("device_online", device_id, transport=transport, addr=f"{addr[0]}:{addr[1]}")
            self._start_catalog_queries(device_id)

    def _went_offline(self, dev: Device, **detail) -> None:
        dev.online = False
        self._stop_catalog_queries(dev.device_id)
        self._emit("device_offline", dev.device_id, **detail)

    # --- MESSAGE (MANSCDP) ---------------------------------------------------------------------
    def _on_message(self, req: SipMessage, addr: tuple[str, int], transport: str) -> None:
        body = parse_manscdp(req.body)
        device_id = uri_user(req.get("From") or "")
        dev = self.registry.devices.get(device_id)
        if dev is None:
            log.warning("gb_message_unregistered", device=device_id, cmd=body.cmd_type)
            self._reply(req, addr, transport, 403, "Forbidden")
            return
        self._reply(req, addr, transport, 200, "OK")
        dev.touch()
        if body.cmd_type == "Keepalive":
            if not dev.online and time.monotonic() < dev.expires_at:
                dev.online = True
                self._emit("device_online", device_id, reason="keepalive")
                if dev.catalog_at < dev.registered_at:
                    self._start_catalog_queries(device_id)
        elif body.cmd_type == "Catalog" and body.root == "Response":
            self._collect_catalog(dev, body.sn, body.sum_num or 0, body.items)
        elif body.cmd_type == "DeviceInfo" and body.root == "Response":
            dev.info = dict(body.fields)

    # --- keepalive watchdog --------------------------------------------------------------------
    async def _watchdog(self) -> None:
        interval = self.cfg.keepalive_timeout_s
        while True:
            await asyncio.sleep(min(1.0, interval / 4))
            now = time.monotonic()
            for dev in list(self.registry.devices.values()):
                if not dev.online:
                    continue
                if now - dev.last_seen > 3 * interval:
                    self._went_offline(dev, reason="keepalive timeout", silent_s=round(now - dev.last_seen, 2))
                elif now > dev.expires_at:
                    self._went_offline(dev, reason="registration expired")
            self.watchdog_at = now
