"""The live view page `/live/{device}/{camera}`: a camera's kitchen, now (视频秒开).

The page is a `<video>` fed by Media Source Extensions from the live WebSocket
(`/api/v1/live/{device}/{camera}`, cloud_receiver/api/live.py), started by the 观看直播 button; the
script (static/live.js) keeps playback near the live edge. Who may open it: who may watch the box
(admin; regulators of its jurisdiction; its own canteen), otherwise 404 as the API does.
"""

from __future__ import annotations

import sqlalchemy as sa
from aiohttp import web

from cloud_receiver.api.context import ctx
from cloud_receiver.storage.schema import cameras, canteens, devices
from cloud_receiver.web.pages import PageError, render, require_user
from cloud_receiver.workflow import queries


async def live_page(request: web.Request) -> web.Response:
    user, principal = require_user(request)
    device_id, camera_id = request.match_info["device"], request.match_info["camera"]
    db = ctx(request).storage.sql
    row = db.one(sa.select(devices.c.id, devices.c.name, canteens.c.name.label("canteen_name"), cameras.c.name.label("camera_name"))
                 .select_from(devices.outerjoin(canteens, canteens.c.id == devices.c.canteen_id)
                              .outerjoin(cameras, sa.and_(cameras.c.device_id == devices.c.id,
                                                          cameras.c.camera_id == camera_id)))
                 .where(devices.c.id == device_id, queries.visibility(principal, devices.c.canteen_id)))
    if row is None:
        raise PageError(404, "未找到", "没有这个设备, 或您无权查看。")
    title = f"{row['canteen_name'] or ''} · {row['camera_name'] or camera_id}"
    return render(request, "live.html", {"title": title, "device_id": device_id, "camera_id": camera_id,
                                         "device_name": row["name"]})


def register(app: web.Application) -> None:
    app.router.add_get("/live/{device}/{camera}", live_page)
