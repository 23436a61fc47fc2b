"""`PATCH /canteens/{id}/public`: edit what the public (parents, by QR code) sees of a canteen.

The body holds any of `licences`, `rating`, `sampling`, `snapshots` (at least one); each part given
replaces that part, the others stay. Lists are never null (send `[]` to empty one); `rating: null`
withdraws the rating. Who may change what:
- admin: everything, any canteen;
- regulator: everything, canteens of its jurisdiction (the rating and the sampling results are the
  regulator's findings);
- canteen: its own `licences` and `snapshots` only.
A snapshot must be a stored picture of one of the canteen's own boxes (`media` of its devices), so a
page can never publish another canteen's kitchen; the public gets it only as a blurred copy
(`/p/{id}/snapshots/{sha256}.jpg`, docs/public.md).

Reading is tolerant: each stored part is checked against the same models and what does not fit
(a row written by hand, or before these checks) is left out and logged, so stored data can never
make the public page fail.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

import structlog
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from cloud_receiver.admin.auth import principal_of
from cloud_receiver.api.alerts import _require_login
from cloud_receiver.api.context import ApiContext, ctx
from cloud_receiver.api.errors import ApiError, bad_request
from cloud_receiver.api.http import json_response
from cloud_receiver.api.params import from_json, json_raw
from cloud_receiver.workflow import queries

log = structlog.get_logger(__name__)

Text = Annotated[str, Field(min_length=1, max_length=100)]
SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


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
    sha256: SHA256
    taken_at: AwareDatetime
    caption: Annotated[str, Field(max_length=100)] = ""
    public: bool = True


def _edit_schema(schema: dict[str, Any]) -> None:
    """An absent part means "keep it", so the parts have no default; at least one must be given."""
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    schema["minProperties"] = 1


class PublicPage(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_edit_schema)

    licences: Annotated[list[Licence], Field(max_length=20)] = None  # type: ignore[assignment] # absent: kept
    rating: Literal["A", "B", "C"] | None = None  # 食品安全量化分级: A 优秀, B 良好, C 一般; null: withdrawn
    sampling: Annotated[list[Sampling], Field(max_length=200)] = None  # type: ignore[assignment]
    snapshots: Annotated[list[Snapshot], Field(max_length=100)] = None  # type: ignore[assignment]


CANTEEN_MAY_SET = {"licences", "snapshots"}
T = TypeVar("T", bound=BaseModel)


async def edit_public_page(request: web.Request) -> web.Response:
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    canteen_id = request.match_info["id"]
    row = c.storage.get_canteen(canteen_id)
    if row is None or not p.can_see(canteen_id, row["jurisdiction"]):
        raise ApiError(404, "not_found", f"canteen {canteen_id!r} not found")
    page = from_json(PublicPage, await json_raw(request))
    given = set(page.model_fields_set)
    if not given:
        raise bad_request("nothing to change: give licences, rating, sampling or snapshots", "invalid_input")
    if p.role == "canteen" and given - CANTEEN_MAY_SET:
        raise ApiError(403, "forbidden", f"a canteen may set only {', '.join(sorted(CANTEEN_MAY_SET))}; "
                       f"{', '.join(sorted(given - CANTEEN_MAY_SET))} are the regulator's")
    if page.snapshots:
        own = _own_pictures(c, canteen_id, [s.sha256 for s in page.snapshots])
        foreign = [i for i, s in enumerate(page.snapshots) if s.sha256 not in own]
        if foreign:  # well-formed, but names no picture of this canteen: 422, not 400
            raise ApiError(422, "invalid_input", f"snapshots.{foreign[0]}.sha256: {page.snapshots[foreign[0]].sha256} "
                           "is not a stored picture of this canteen's boxes")
    current = _stored(row)
    current.update(page.model_dump(mode="json", include=given))
    c.storage.set_public_json(canteen_id, json.dumps(current, ensure_ascii=False))
    log.info("public_page_updated", canteen_id=canteen_id, parts=sorted(given))
    return json_response(public_view(c, {**row, "public_json": json.dumps(current)}))


def _own_pictures(c: ApiContext, canteen_id: str, shas: list[str]) -> set[str]:
    """Those of `shas` that a box of this canteen uploaded."""
    return queries.own_pictures(c.storage.sql, canteen_id, shas)


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    try:
        current = json.loads(row.get("public_json") or "{}")
    except (ValueError, RecursionError):
        return {}
    return current if isinstance(current, dict) else {}


def _valid(model: type[T], items: list[dict[str, Any]], canteen_id: str, part: str) -> list[T]:
    out = []
    for i, item in enumerate(items):
        try:
            out.append(model.model_validate(item))
        except ValidationError as err:
            log.warning("public_page_entry_skipped", canteen_id=canteen_id, part=part, index=i,
                        problem=str(err.errors()[0]["msg"]))
    return out


def public_view(c: ApiContext, row: dict) -> dict:
    """What GET /public/canteens/{id} shows of a canteen row (only entries that fit the models)."""
    profile = queries.public_profile(row)
    licences = _valid(Licence, profile["licences"], row["id"], "licences")
    sampling = _valid(Sampling, profile["sampling"], row["id"], "sampling")
    snaps = sorted(_valid(Snapshot, profile["snapshots"], row["id"], "snapshots"), key=lambda s: s.taken_at,
                   reverse=True)[:c.settings.public_snapshots]
    own = _own_pictures(c, row["id"], [s.sha256 for s in snaps])  # only what the public can download
    return {"id": row["id"], "name": row["name"], "licences": [x.model_dump(mode="json") for x in licences],
            "rating": profile["rating"] if profile["rating"] in ("A", "B", "C") else None,
            "sampling": [x.model_dump(mode="json") for x in sampling],
            "snapshots": [{"sha256": s.sha256, "taken_at": s.model_dump(mode="json")["taken_at"], "caption": s.caption,
                           "url": public_snapshot_url(row["id"], s.sha256)} for s in snaps if s.sha256 in own]}


def public_snapshot_url(canteen_id: str, sha256: str) -> str:
    """Where the public gets a snapshot: its blurred copy (faces and heads obscured, cloud_receiver/privacy),
    never the original, which /api/v1/media serves to logged-in people only."""
    return f"/p/{quote(canteen_id, safe='')}/snapshots/{sha256}.jpg"
