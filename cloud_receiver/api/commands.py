"""Commands to a box: `POST /devices/{id}/commands` sends one, `GET /devices/{id}/commands/{cid}` shows its state.

Who may send what is `cloud_receiver.control.commands.MAY_SEND` (admin everything; a regulator and
the canteen itself the viewing commands: status, snapshot_now, live_start/stop, playback; a regulator
also collect_mark, an alert judged a false alarm whose frame the box keeps for training). A device
the caller may not see is 404 (no existence leak); a command the caller's role may not send, 403.
The command is stored, then published (QoS 1, the broker's PUBACK awaited off the event loop); a box
that is not connected answers 503 and the command stays on record as not sent.
"""

from __future__ import annotations

import sqlalchemy as sa
from aiohttp import web

from cloud_receiver.admin.auth import Principal, principal_of
from cloud_receiver.api.alerts import _require_login
from cloud_receiver.api.bodies import CommandBody
from cloud_receiver.api.context import ctx
from cloud_receiver.api.errors import ApiError
from cloud_receiver.api.http import json_response
from cloud_receiver.api.params import from_json, json_raw
from cloud_receiver.control import commands as control
from cloud_receiver.control.publisher import PublishFailed
from cloud_receiver.storage.db import Db
from cloud_receiver.storage.schema import devices
from cloud_receiver.workflow import queries


def visible_device(db: Db, p: Principal, device_id: str) -> None:
    found = db.one(sa.select(devices.c.id).where(devices.c.id == device_id, queries.visibility(p, devices.c.canteen_id)))
    if found is None:
        raise ApiError(404, "not_found", f"device {device_id!r} not found")


async def send_command(request: web.Request) -> web.Response:
    _require_login(request)
    c, p, device_id = ctx(request), principal_of(request), request.match_info["id"]
    body = from_json(CommandBody, await json_raw(request))
    visible_device(c.storage.sql, p, device_id)
    try:
        cmd = await control.send(c.storage.sql, c.publisher, p, device_id, body.name, c.now(),
                                 camera_id=body.camera_id, args=body.args, ttl_s=body.ttl_s)
    except control.CommandRefused as err:
        raise ApiError(403, "forbidden", str(err)) from err
    except control.NotConnected as err:
        raise ApiError(503, "unavailable", str(err)) from err
    except PublishFailed as err:
        raise ApiError(503, "box_unreachable", f"the command was not delivered: {err}") from err
    return json_response(control.view(c.storage.sql, device_id, cmd.id, c.now()))


async def get_command(request: web.Request) -> web.Response:
    _require_login(request)
    c, p, device_id = ctx(request), principal_of(request), request.match_info["id"]
    visible_device(c.storage.sql, p, device_id)
    found = control.view(c.storage.sql, device_id, request.match_info["cid"], c.now())
    if found is None:
        raise ApiError(404, "not_found", f"command {request.match_info['cid']!r} not found")
    return json_response(found)
