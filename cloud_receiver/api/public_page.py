"""`PATCH /canteens/{id}/public`: edit what the public (parents, by QR code) sees of a canteen.

The body holds any of `licences`, `rating`, `sampling`, `snapshots`; each part given replaces that
part, the others stay. Who may change what:
- admin: everything, any canteen;
- regulator: everything, canteens of its jurisdiction (the rating and the sampling results are the
  regulator's findings);
- canteen: its own `licences` and `snapshots` only.
A snapshot must be a stored picture of one of the canteen's own boxes (`media` of its devices), so a
page can never publish another canteen's kitchen.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_receiver.admin.auth import principal_of
from cloud_receiver.api.alerts import _require_login
from cloud_receiver.api.context import ctx
from cloud_receiver.api.errors import ApiError, bad_request
from cloud_receiver.api.params import json_body
from cloud_receiver.errors import validation_problem
from cloud_receiver.workflow import queries

log = structlog.get_logger(__name__)

Text = Annotated[str, Field(min_length=1, max_length=100)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Licence(_Strict):
    name: Text  # e.g. 食品经营许可证
    number: Annotated[str, Field(min_length=1, max_length=64)]
    valid_until: date | None = None


class Sampling(_Strict):
    date: date
    item: Text  # e.g. 餐具
    result: Text  # e.g. 合格


class Snapshot(_Strict):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    taken_at: datetime
    caption: Annotated[str, Field(max_length=100)] = ""
    public: bool = True


class PublicPage(_Strict):
    licences: Annotated[list[Licence], Field(max_length=20)] | None = None
    rating: Literal["A", "B", "C"] | None = None  # 食品安全量化分级: A 优秀, B 良好, C 一般
    sampling: Annotated[list[Sampling], Field(max_length=200)] | None = None
    snapshots: Annotated[list[Snapshot], Field(max_length=100)] | None = None


CANTEEN_MAY_SET = {"licences", "snapshots"}


async def edit_public_page(request: web.Request) -> web.Response:
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    canteen_id = request.match_info["id"]
    row = c.storage.get_canteen(canteen_id)
    if row is None or not p.can_see(canteen_id, row["jurisdiction"]):
        raise ApiError(404, "not_found", f"canteen {canteen_id!r} not found")
    body = await json_body(request)
    try:
        page = PublicPage.model_validate(body)
    except ValidationError as err:
        raise bad_request(validation_problem(err, "(body)"), "invalid_input") from err
    given = set(page.model_fields_set)
    if not given:
        raise bad_request("nothing to change: give licences, rating, sampling or snapshots", "invalid_input")
    if p.role == "canteen" and given - CANTEEN_MAY_SET:
        raise ApiError(403, "forbidden", f"a canteen may set only {', '.join(sorted(CANTEEN_MAY_SET))}; "
                       f"{', '.join(sorted(given - CANTEEN_MAY_SET))} are the regulator's")
    if page.snapshots:
        own = {r[0] for r in c.storage.db.execute(
            "SELECT DISTINCT m.sha256 FROM media m JOIN devices d ON d.id = m.device_id WHERE d.canteen_id = ?"
            f" AND m.sha256 IN ({','.join('?' * len(page.snapshots))})",
            [canteen_id, *(s.sha256 for s in page.snapshots)]).fetchall()}
        foreign = [s.sha256 for s in page.snapshots if s.sha256 not in own]
        if foreign:
            raise bad_request(f"snapshots: {foreign[0]} is not a stored picture of this canteen's boxes", "invalid_input")
    try:
        current = json.loads(row.get("public_json") or "{}")
    except ValueError:
        current = {}
    current = current if isinstance(current, dict) else {}
    current.update(page.model_dump(mode="json", include=given))
    c.storage.set_public_json(canteen_id, json.dumps(current, ensure_ascii=False))
    log.info("public_page_updated", canteen_id=canteen_id, parts=sorted(given))
    return web.json_response(public_view(c, {**row, "public_json": json.dumps(current)}))


def public_view(c, row: dict) -> dict:  # noqa: ANN001 - ApiContext
    """What GET /public/canteens/{id} shows of a canteen row."""
    profile = queries.public_profile(row)
    snaps = sorted(profile["snapshots"], key=lambda s: str(s.get("taken_at") or ""), reverse=True)
    snaps = [{"sha256": s["sha256"], "taken_at": s.get("taken_at"), "caption": s.get("caption", ""),
              "url": f"/api/v1/media/{s['sha256']}"} for s in snaps[:c.settings.public_snapshots]]
    return {"id": row["id"], "name": row["name"], "licences": profile["licences"], "rating": profile["rating"],
            "sampling": profile["sampling"], "snapshots": snaps}
