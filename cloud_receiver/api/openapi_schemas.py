"""Components of the OpenAPI document: response and request schemas, and the parameters' shapes.

Every response schema lists its fields as required and says which may be null, so a client (and
schemathesis' response checks) can rely on them. Request bodies come from the pydantic models that
validate them (`bodies`, `public_page`), so the document cannot drift from the checks.
"""

from __future__ import annotations

from typing import Any

from bk_contract.violations import VIOLATION_NAMES
from cloud_receiver.api.bodies import DeadlineBody, RectificationJson, Review, Said, schema_of
from cloud_receiver.api.public_page import Licence, PublicPage, Sampling
from cloud_receiver.workflow.rectify import STATUSES


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """An object schema whose `required` properties are always present."""
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}, **extra}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return {**schema, "type": [*kinds, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


STR = {"type": "string"}
INT = {"type": "integer"}
TIME = {"type": "string", "format": "date-time"}
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
# a time filter: an RFC 3339 time with its zone, or a bare date = the start of that day in UTC+8
TIME_OR_DATE = {"anyOf": [TIME, {"type": "string", "format": "date"}],
                "description": "RFC 3339 time with a zone (e.g. 2024-05-01T08:00:00+08:00), or a date (2024-05-01), "
                               "which means the start of that day in China Standard Time (UTC+8). A time without a "
                               "zone is refused."}
TYPES = "|".join(VIOLATION_NAMES)
TYPE_LIST = {"type": "string", "pattern": f"^({TYPES})(,({TYPES}))*$"}
CURSOR = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,512}$"}
ALERT_ID = {"type": "string", "pattern": "^[0-9A-Za-z_-]{1,64}$"}
CANTEEN_ID = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}

_ALERT = {
    "id": STR, "device_id": STR, "canteen_id": nullable(STR), "canteen_name": nullable(STR), "camera_id": STR,
    "type": {"enum": list(VIOLATION_NAMES)}, "type_name": {"type": "string", "description": "Chinese name."},
    "level": {"enum": ["info", "warning", "critical"]}, "state": {"enum": ["start", "update", "end"]},
    "rev": INT, "started_at": TIME, "ended_at": nullable(TIME), "score": nullable({"type": "number"}),
    "boxes": {"type": "array", "items": {"type": "object"}}, "detail": STR,
    "snapshot_sha256": nullable(STR), "clip_sha256": nullable(STR), "received_at": TIME,
    "status": {"enum": list(STATUSES), "description": "Workflow status; 逾期 is computed from the deadline."},
    "deadline": nullable(TIME),
}
_SNAPSHOT = obj({"sha256": SHA256, "taken_at": TIME, "caption": STR, "url": STR})

SCHEMAS: dict[str, Any] = {
    "Error": obj({"error": obj({"code": STR, "message": STR})}),
    "Alert": obj(_ALERT),
    "Transition": obj({"from_status": STR, "to_status": STR, "actor": STR, "role": STR, "note": STR,
                       "photo_sha256": nullable(STR), "at": TIME}),
    "AlertDetail": obj({**_ALERT, "transitions": {"type": "array", "items": ref("Transition")}}),
    "Device": obj({"id": STR, "canteen_id": nullable(STR), "canteen_name": nullable(STR), "name": STR,
                   "online": {"type": "boolean"}, "last_seen": nullable(STR), "version": nullable(STR),
                   "created_at": TIME}),
    "Camera": obj({"device_id": STR, "camera_id": STR, "name": nullable(STR), "state": nullable(STR),
                   "fps": nullable({"type": "number"}), "reconnects": nullable(INT), "error": nullable(STR),
                   "updated_at": nullable(STR), "canteen_id": nullable(STR)}),
    "Canteen": obj({"id": STR, "name": STR, "jurisdiction": STR}),
    "Stats": obj({
        "since": TIME, "until": TIME, "total": INT,
        "by_type": {"type": "object", "additionalProperties": INT},
        "by_canteen": {"type": "object", "additionalProperties": INT},
        "by_day": {"type": "object", "additionalProperties": INT, "description": "Local (UTC+8) dates."},
        "devices": obj({"total": INT, "online": INT, "online_rate": nullable({"type": "number"})})}),
    "PublicCanteen": obj({
        "id": STR, "name": STR, "licences": {"type": "array", "items": ref("Licence")},
        "rating": {"enum": ["A", "B", "C", None]}, "sampling": {"type": "array", "items": ref("Sampling")},
        "snapshots": {"type": "array", "items": _SNAPSHOT}}),
    "Ticket": obj({"ticket": STR, "expires_in_s": INT, "url": STR}),
    "Licence": schema_of(Licence),
    "Sampling": schema_of(Sampling),
    "DeadlineBody": schema_of(DeadlineBody),
    "ReviewBody": schema_of(Review),
    "RectificationJson": schema_of(RectificationJson),
    "RectificationForm": obj({
        "note": {**schema_of(Said), "description": "What was done."},
        "photo": {"type": "string", "format": "binary", "contentMediaType": "image/jpeg",
                  "description": "The photo, a JPEG file."}}),
}
for _name, _model in (("PublicPageEdit", PublicPage),):
    _schema = schema_of(_model)
    SCHEMAS.update(_schema.pop("$defs", {}))
    SCHEMAS[_name] = _schema
for _name in ("ReviewBody",):  # the union's members, referenced by its oneOf
    SCHEMAS.update(SCHEMAS[_name].pop("$defs", {}))
