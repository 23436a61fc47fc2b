"""Components of the OpenAPI document: response and request schemas, and the parameters' shapes.

Every response schema lists its fields as required and says which may be null, so a client (and
schemathesis' response checks) can rely on them. Request bodies come from the pydantic models that
validate them (`bodies`, `public_page`), so the document cannot drift from the checks.
"""

from __future__ import annotations

from typing import Any

from bk_contract.violations import ALERT_TYPE_NAMES
from cloud_receiver.api.bodies import (
    CommandBody,
    DeadlineBody,
    LedgerPhotoJson,
    RectificationJson,
    Review,
    Said,
    schema_of,
)
from cloud_receiver.api.public_page import Licence, PublicPage, Sampling
from cloud_receiver.ledgers.models import CORRECTIONS as LEDGER_CORRECTIONS
from cloud_receiver.ledgers.models import KINDS as LEDGER_KINDS
from cloud_receiver.ledgers.models import CommentBody, MorningCheckBatch
from cloud_receiver.workflow.export_feed import COUNTS, KINDS
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
TYPES = "|".join(ALERT_TYPE_NAMES)  # camera and ledger (and public report) alert types
TYPE_LIST = {"type": "string", "pattern": f"^({TYPES})(,({TYPES}))*$"}
CURSOR = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,512}$"}
ALERT_ID = {"type": "string", "pattern": "^[0-9A-Za-z_-]{1,64}$"}
CANTEEN_ID = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}

_ALERT = {
    "id": STR, "device_id": STR, "canteen_id": nullable(STR), "canteen_name": nullable(STR), "camera_id": STR,
    "type": {"enum": list(ALERT_TYPE_NAMES)}, "type_name": {"type": "string", "description": "Chinese name."},
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
    "CommandBody": schema_of(CommandBody),
    "Command": obj({"id": STR, "device_id": STR, "name": STR, "camera_id": nullable(STR),
                    "args": {"type": "object"}, "issuer": STR, "issued_at": TIME, "expires_at": TIME,
                    "published_at": nullable(STR), "answered_at": nullable(STR),
                    "state": {"enum": ["pending", "ok", "failed", "expired", "not_sent"]}, "error": STR,
                    "data": {"type": "object"},
                    "upload": nullable(obj({"done": {"type": "boolean"}, "received_bytes": INT,
                                            "bytes": nullable(INT), "sha256": STR}))}),
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

# the export for an upper platform (api/export.py, workflow/export_feed.py)
_RATE = nullable({"type": "number", "minimum": 0, "maximum": 1})
SCHEMAS.update({
    "ExportChange": obj({
        "seq": {**INT, "description": "Sequence number of the change: unique, increasing in feed order."},
        "kind": {"enum": list(KINDS)}, "changed_at": TIME, "jurisdiction": nullable(STR),
        "alert": {**ref("AlertDetail"), "description": "The alert as it is now (not as it was at the change)."}}),
    "ExportChanges": obj({"items": {"type": "array", "items": ref("ExportChange")},
                          "next_cursor": {**CURSOR, "description": "Where to go on from; keep it, also from a last page."},
                          "has_more": {"type": "boolean", "description": "More changes are ready now: ask again at once."}}),
    "ExportDevices": obj({"total": INT, "online": INT, "online_rate": _RATE, "last_seen": nullable(TIME)}),
    "ExportAlerts": obj({**{k: INT for k in COUNTS}, "rectification_rate": _RATE, "closure_rate": _RATE}),
    "ExportCanteen": obj({"canteen_id": STR, "canteen_name": STR, "jurisdiction": STR, "devices": ref("ExportDevices"),
                          "alerts": ref("ExportAlerts")}),
    "ExportCanteens": obj({"as_of": TIME, "since": TIME, "until": TIME,
                           "items": {"type": "array", "items": ref("ExportCanteen")},
                           "totals": obj({"canteens": INT, "devices": ref("ExportDevices"), "alerts": ref("ExportAlerts")})}),
})

# the canteens' ledgers (api/ledgers.py, cloud_receiver/ledgers/, docs/ledgers.md)
_LEDGER_MODELS = [k.model for k in LEDGER_KINDS.values()] + [MorningCheckBatch]
for _model in [*_LEDGER_MODELS, *LEDGER_CORRECTIONS.values(), LedgerPhotoJson, CommentBody]:
    _schema = schema_of(_model)
    SCHEMAS.update(_schema.pop("$defs", {}))
    SCHEMAS[_model.__name__] = _schema
_DAY = {"type": "string", "format": "date"}
_ENTRY = {"id": STR, "kind": {"enum": list(LEDGER_KINDS)}, "kind_name": {**STR, "description": "Chinese name."},
          "canteen_id": STR, "day": _DAY, "revision": INT,
          "data": {"type": "object", "description": "The entry's fields, as the ledger's model describes them."},
          "created_by": STR, "created_role": {"enum": ["admin", "canteen"]}, "created_at": TIME,
          "edited_by": nullable(STR), "edited_at": nullable(TIME), "reason": nullable(STR),
          "current": {"type": "boolean", "description": "false: an older revision, corrected by a later one."},
          "editable_until": {**TIME, "description": "Until then the canteen may still change it in place (PUT)."}}
_SUPPLIER = {"supplier": {**nullable(ref("SupplierState")), "description": "Purchases only: the supplier and the "
                                                                            "state of its licence on the delivery day."}}
_N = nullable(STR)
SCHEMAS.update({
    "LedgerEntryBody": {"anyOf": [ref(m.__name__) for m in _LEDGER_MODELS[:-1]],
                        "description": "The fields of an entry of the ledger named in the path."},
    "LedgerCorrectionBody": {"anyOf": [ref(m.__name__) for m in LEDGER_CORRECTIONS.values()]},
    "SupplierState": obj({"id": STR, "name": _N, "credit_code": _N, "licence_no": _N, "licence_expiry": nullable(_DAY),
                          "licence_photo_sha256": _N, "active": {"type": "boolean"},
                          "licence_state": {"enum": ["valid", "expiring", "expired", "unknown"]}}),
    "LedgerEntry": obj(_ENTRY, _SUPPLIER),
    "LedgerComment": obj({"id": INT, "author": STR, "role": STR, "text": STR, "at": TIME}),
    "LedgerEntryDetail": obj({**_ENTRY, "revisions": {"type": "array", "items": ref("LedgerEntry")},
                              "comments": {"type": "array", "items": ref("LedgerComment")}}, _SUPPLIER),
    "LedgerPage": obj({"items": {"type": "array", "items": ref("LedgerEntry")}, "next_cursor": nullable(CURSOR)}),
    "LedgerEntries": obj({"items": {"type": "array", "items": ref("LedgerEntry")}}),
    "LedgerPhoto": obj({"sha256": SHA256, "url": STR}),
    "LedgerPhotoForm": obj({"photo": {"type": "string", "format": "binary", "contentMediaType": "image/jpeg"}},
                           additionalProperties=False),
    "LedgerDay": obj({
        "canteen": obj({"id": STR, "name": STR}), "day": _DAY,
        "morning_checks": {"type": "array", "items": obj({**_ENTRY, "staff": nullable(obj({
            "id": STR, "name": _N, "position": _N, "health_cert_no": _N, "health_cert_expiry": nullable(_DAY),
            "health_cert_state": {"enum": ["valid", "expiring", "expired", "unknown"]}}))})},
        "working": {"type": "array", "items": STR, "description": "Names of the people checked fit to work."},
        "not_checked": {"type": "array", "items": obj({"id": STR, "name": _N, "position": _N})},
        "purchases": {"type": "array", "items": ref("LedgerEntry")},
        **{k: {"type": "array", "items": ref("LedgerEntry")}
           for k in ("samples", "disinfection", "waste", "gatherings", "additives", "photos")},
        "alerts": {"type": "array", "items": obj({"id": STR, "type": {"enum": list(ALERT_TYPE_NAMES)},
                                                  "detail": _N, "status": STR, "started_at": TIME})}}),
})
