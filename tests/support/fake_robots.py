"""FakeRobots: a fake of the WeCom (企业微信) and DingTalk (钉钉) robot webhooks, named as such (the real services are not reachable here)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from aiohttp import web

SECRET = "SECtestsecret0123456789"


class FakeRobots:
    """Fake of the WeCom and DingTalk group-robot webhooks (the real ones are unreachable here)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls = 0
        self.received: list[tuple[float, str, str]] = []  # (monotonic time, kind, text)
        self.bad_signatures = 0
        self.app = web.Application()
        self.app.router.add_post("/robot/send", self.dingtalk)
        self.app.router.add_post("/cgi-bin/webhook/send", self.wecom)

    def _fail(self) -> web.Response | None:
        self.calls += 1
        if self.calls <= self.fail_first:
            if self.calls % 2:
                return web.Response(status=502, text="bad gateway")
            return web.json_response({"errcode": 130101, "errmsg": "send too fast"})
        return None

    async def dingtalk(self, request: web.Request) -> web.Response:
        await request.read()
        ts, sign = request.query.get("timestamp", ""), request.query.get("sign", "")
        expect = base64.b64encode(hmac.new(SECRET.encode(), f"{ts}\n{SECRET}".encode(), hashlib.sha256).digest()).decode()
        if not ts.isdigit() or abs(int(ts) - time.time() * 1000) > 3600_000 or not hmac.compare_digest(sign, expect):
            self.bad_signatures += 1
            return web.json_response({"errcode": 310000, "errmsg": "sign not match"})
        return await self._accept(request, "dingtalk")

    async def wecom(self, request: web.Request) -> web.Response:
        return await self._accept(request, "wecom")

    async def _accept(self, request: web.Request, kind: str) -> web.Response:
        failed = self._fail()
        if failed is not None:
            return failed
        body = await request.json()
        assert body["msgtype"] == "text"
        self.received.append((time.monotonic(), kind, body["text"]["content"]))
        return web.json_response({"errcode": 0, "errmsg": "ok"})
