"""Live video to the browser: `GET /api/v1/live/{device}/{camera}` upgraded to a WebSocket.

Who may watch: those who may send `live_start` to the box (cloud_receiver.control.commands.MAY_SEND:
admin; regulators of the jurisdiction; the canteen itself) — the public never (faces cannot be
blurred in live video). A browser authenticates with the console's session cookie or a stream
ticket (`?ticket=`); a WebSocket from another origin is refused (403). Messages: first a JSON text
`{"codec": "avc1.42C01E"}` for `MediaSource.addSourceBuffer('video/mp4; codecs="…"')`, then binary
fragmented-MP4 pieces to append in order (cloud_receiver/live/relay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from cloud_receiver.admin.auth import principal_of
from cloud_receiver.api.alerts import _require_login
from cloud_receiver.api.commands import visible_device
from cloud_receiver.api.context import ctx
from cloud_receiver.api.errors import ApiError
from cloud_receiver.control import commands as control


async def live_socket(request: web.Request) -> web.StreamResponse:
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    device_id, camera_id = request.match_info["id"], request.match_info["camera"]
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).netloc != request.host:
        raise ApiError(403, "forbidden", f"a live view from another origin ({origin}) is not allowed")
    visible_device(c.storage.sql, p, device_id)
    try:
        control.check_may_send(p, "live_start")
    except control.CommandRefused as err:
        raise ApiError(403, "forbidden", str(err)) from err
    if c.live is None:
        raise ApiError(503, "unavailable", "this receiver has no MQTT connection for live video")
    ws = web.WebSocketResponse(heartbeat=20.0)
    await ws.prepare(request)

    async def pump() -> None:
        try:
            async for item in c.live.watch(device_id, camera_id):
                if isinstance(item, str):
                    await ws.send_json({"codec": item, "device_id": device_id, "camera_id": camera_id})
                else:
                    await ws.send_bytes(item)
        except TimeoutError:
            await ws.send_json({"error": "没有收到该摄像头的视频，请稍后再试 (no video from the box in time)"})
            await ws.close()

    task = asyncio.create_task(pump(), name=f"live-{device_id}-{camera_id}")
    try:
        async for msg in ws:  # the browser sends nothing; this ends when it goes away
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
            await task
    return ws
