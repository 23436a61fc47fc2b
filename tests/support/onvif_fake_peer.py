"""A FAKE ONVIF device (tiny HTTP SOAP peer on 127.0.0.1) for shapes ipycam cannot produce.

ipycam answers every refused request with HTTP 401 plus a plain `Sender not authorized` fault
and keeps the host's clock. Real cameras also answer with a `ter:NotAuthorized` subcode,
with a bare 401 (no SOAP body), or have a clock hours off and reject WS-UsernameToken digests
whose `Created` is outside their window. This peer plays those roles:

- mode "ok": checks the UsernameToken digest and that Created is within `window_s` of the
  peer's own (skewed) clock; answers NotAuthorized faults otherwise.
- mode "fault": every authenticated request gets a 400 NotAuthorized fault.
- mode "bare401": every authenticated request gets HTTP 401 with an empty body.
- mode "silent": accepts connections and never answers (for timeouts).
GetSystemDateAndTime is answered without authentication, as ONVIF requires.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENV = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tt="http://www.onvif.org/ver10/schema" '
    'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" '
    'xmlns:ter="http://www.onvif.org/ver10/error"><s:Body>{body}</s:Body></s:Envelope>'
)
FAULT = (
    "<s:Fault><s:Code><s:Value>s:{code}</s:Value><s:Subcode><s:Value>{sub}</s:Value></s:Subcode></s:Code>"
    '<s:Reason><s:Text xml:lang="en">{reason}</s:Text></s:Reason></s:Fault>'
)


def _text(body: str, tag: str) -> str | None:
    m = re.search(rf"<(?:\w+:)?{tag}\b[^>]*>([^<]*)</(?:\w+:)?{tag}>", body)
    return m.group(1) if m else None


class FakeOnvifPeer:
    def __init__(self, username: str, password: str, mode: str = "ok", skew: timedelta = timedelta(0),
                 window_s: float = 60.0) -> None:
        self.username, self.password, self.mode, self.skew, self.window_s = username, password, mode, skew, window_s
        self.requests: list[str] = []
        self.rejected_created: list[str] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8")
                status, reply = peer.answer(body)
                if status == 0:
                    time.sleep(30)
                    return
                data = reply.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-onvif", daemon=True)

    def __enter__(self) -> FakeOnvifPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.skew

    def _authorised(self, body: str) -> bool:
        user, digest, nonce, created = (_text(body, t) for t in ("Username", "Password", "Nonce", "Created"))
        if not (user and digest and nonce and created):
            return False
        expected = base64.b64encode(
            hashlib.sha1(base64.b64decode(nonce) + created.encode() + self.password.encode()).digest()
        ).decode()
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
        if abs((when - self.now()).total_seconds()) > self.window_s:
            self.rejected_created.append(created)
            return False
        return user == self.username and digest == expected

    def answer(self, body: str) -> tuple[int, str]:
        action = next((a for a in ACTIONS if re.search(rf"<(?:\w+:)?{a}\b", body)), "")
        self.requests.append(action)
        if self.mode == "silent":
            return 0, ""
        if action == "GetSystemDateAndTime":
            return 200, ENV.format(body=self._date_time())
        if self.mode == "bare401":
            return 401, ""
        if self.mode == "fault" or not self._authorised(body):
            return 400, ENV.format(body=FAULT.format(code="Sender", sub="ter:NotAuthorized", reason="Sender not Authorized"))
        if action == "GetServices":
            return 400, ENV.format(body=FAULT.format(code="Receiver", sub="ter:ActionNotSupported", reason="not supported"))
        return 200, ENV.format(body=getattr(self, "_" + action, lambda: "")())

    def _date_time(self) -> str:
        n = self.now()
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>Manual</tt:DateTimeType>"
            "<tt:DaylightSavings>false</tt:DaylightSavings><tt:UTCDateTime>"
            f"<tt:Time><tt:Hour>{n.hour}</tt:Hour><tt:Minute>{n.minute}</tt:Minute><tt:Second>{n.second}</tt:Second></tt:Time>"
            f"<tt:Date><tt:Year>{n.year}</tt:Year><tt:Month>{n.month}</tt:Month><tt:Day>{n.day}</tt:Day></tt:Date>"
            "</tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/onvif/{path}"

    def _GetCapabilities(self) -> str:
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{self._url('device_service')}</tt:XAddr></tt:Device>"
            f"<tt:Media><tt:XAddr>{self._url('media_service')}</tt:XAddr></tt:Media>"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    def _GetDeviceInformation(self) -> str:
        return (
            "<tds:GetDeviceInformationResponse><tds:Manufacturer>FakeCam</tds:Manufacturer><tds:Model>Skewed-1</tds:Model>"
            "<tds:FirmwareVersion>0.1</tds:FirmwareVersion><tds:SerialNumber>F-1</tds:SerialNumber>"
            "<tds:HardwareId>HW-F</tds:HardwareId></tds:GetDeviceInformationResponse>"
        )

    def _GetProfiles(self) -> str:
        def profile(token: str, w: int, h: int) -> str:
            return (
                f'<trt:Profiles token="{token}" fixed="true"><tt:Name>{token}</tt:Name>'
                f'<tt:VideoEncoderConfiguration token="enc_{token}"><tt:Name>enc</tt:Name><tt:UseCount>1</tt:UseCount>'
                f"<tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>{w}</tt:Width><tt:Height>{h}</tt:Height></tt:Resolution>"
                "<tt:Quality>4</tt:Quality></tt:VideoEncoderConfiguration></trt:Profiles>"
            )

        return f"<trt:GetProfilesResponse>{profile('hd', 1920, 1080)}{profile('tiny', 176, 144)}{profile('sd', 640, 360)}</trt:GetProfilesResponse>"

    def _GetStreamUri(self) -> str:
        return (
            "<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>rtsp://admin:leak@127.0.0.1:9554/fake</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
            "<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>"
        )

    def _GetSnapshotUri(self) -> str:
        return (
            f"<trt:GetSnapshotUriResponse><trt:MediaUri><tt:Uri>http://127.0.0.1:{self.port}/snap.jpg</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
            "<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetSnapshotUriResponse>"
        )


ACTIONS = ("GetSystemDateAndTime", "GetServices", "GetCapabilities", "GetDeviceInformation", "GetProfiles",
           "GetStreamUri", "GetSnapshotUri")
