"""The OpenAPI 3.1 document of /api/v1, written as data next to the routes.

tests/test_api_openapi.py checks that every registered route is documented here and that every
path documented here is registered.
"""

from __future__ import annotations

from typing import Any

from bk_contract.violations import VIOLATION_NAMES
from cloud_receiver.api.public_page import PublicPage
from cloud_receiver.workflow.rectify import STATUSES

BEARER = [{"bearer": []}]
PUBLIC: list[dict[str, list[str]]] = []


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad input; the message says what is wrong.", 401: "No or invalid token.",
            403: "The token's role or scope does not allow this.", 404: "Not found or not visible to this token.",
            409: "The action does not fit the alert's current status.", 413: "Body or photo too large."}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": _ref("Error")}}} for c in codes}


def _ok(description: str, schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"200": {"description": description, "content": {media: {"schema": schema}}}}


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _p(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"items": {"type": "array", "items": _ref(name)}}}


TIME = {"type": "string", "format": "date-time"}
ALERT_ID = _p("id", "Alert id (ULID / UUIDv7 given by the edge agent).")
WORKFLOW_ERRORS = _errors(400, 401, 403, 404, 409)

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "Alert": {"type": "object", "properties": {
        "id": {"type": "string"}, "device_id": {"type": "string"}, "canteen_id": {"type": ["string", "null"]},
        "canteen_name": {"type": ["string", "null"]}, "camera_id": {"type": "string"},
        "type": {"enum": list(VIOLATION_NAMES)}, "type_name": {"type": "string", "description": "Chinese name."},
        "level": {"enum": ["info", "warning", "critical"]}, "state": {"enum": ["start", "update", "end"]},
        "rev": {"type": "integer"}, "started_at": TIME, "ended_at": {"type": ["string", "null"], "format": "date-time"},
        "score": {"type": "number"}, "boxes": {"type": "array", "items": {"type": "object"}},
        "detail": {"type": "string"}, "snapshot_sha256": {"type": ["string", "null"]},
        "clip_sha256": {"type": ["string", "null"]}, "received_at": TIME,
        "status": {"enum": list(STATUSES), "description": "Workflow status; 逾期 is computed from the deadline."},
        "deadline": {"type": ["string", "null"], "format": "date-time"}}},
    "Transition": {"type": "object", "properties": {
        "from_status": {"type": "string"}, "to_status": {"type": "string"}, "actor": {"type": "string"},
        "role": {"type": "string"}, "note": {"type": "string"}, "photo_sha256": {"type": ["string", "null"]},
        "at": TIME}},
    "AlertDetail": {"allOf": [_ref("Alert"), {"type": "object", "properties": {
        "transitions": {"type": "array", "items": _ref("Transition")}}}]},
    "Device": {"type": "object", "properties": {
        "id": {"type": "string"}, "canteen_id": {"type": "string"}, "canteen_name": {"type": ["string", "null"]},
        "name": {"type": "string"}, "online": {"type": "boolean"}, "last_seen": {"type": ["string", "null"]},
        "version": {"type": ["string", "null"]}, "created_at": TIME}},
    "Camera": {"type": "object", "properties": {
        "device_id": {"type": "string"}, "camera_id": {"type": "string"}, "name": {"type": ["string", "null"]},
        "state": {"type": ["string", "null"]}, "fps": {"type": ["number", "null"]},
        "reconnects": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]},
        "updated_at": {"type": ["string", "null"]}, "canteen_id": {"type": "string"}}},
    "Canteen": {"type": "object", "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "jurisdiction": {"type": "string"}}},
    "Stats": {"type": "object", "properties": {
        "since": TIME, "until": TIME, "total": {"type": "integer"},
        "by_type": {"type": "object", "additionalProperties": {"type": "integer"}},
        "by_canteen": {"type": "object", "additionalProperties": {"type": "integer"}},
        "by_day": {"type": "object", "additionalProperties": {"type": "integer"},
                   "description": "Local (UTC+8) dates."},
        "devices": {"type": "object", "properties": {"total": {"type": "integer"}, "online": {"type": "integer"},
                                                     "online_rate": {"type": ["number", "null"]}}}}},
    "PublicCanteen": {"type": "object", "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "licences": {"type": "array"},
        "rating": {"type": ["string", "null"]}, "sampling": {"type": "array"},
        "snapshots": {"type": "array", "items": {"type": "object", "properties": {
            "sha256": {"type": "string"}, "taken_at": {"type": ["string", "null"]}, "caption": {"type": "string"},
            "url": {"type": "string"}}}}}},
}

PATHS: dict[str, dict[str, Any]] = {
    "/openapi.json": {"get": {"summary": "This document.", "security": PUBLIC,
                              "responses": _ok("OpenAPI 3.1 document.", {"type": "object"})}},
    "/canteens": {"get": {"summary": "Canteens visible to the token.", "security": BEARER,
                          "responses": {**_ok("Canteens.", _list_of("Canteen")), **_errors(401)}}},
    "/devices": {"get": {"summary": "Edge boxes with online status and last seen time.", "security": BEARER,
                         "responses": {**_ok("Devices.", _list_of("Device")), **_errors(401)}}},
    "/cameras": {"get": {"summary": "Cameras and their health as last reported.", "security": BEARER,
                         "parameters": [_q("device", "Only this device's cameras.")],
                         "responses": {**_ok("Cameras.", _list_of("Camera")), **_errors(401)}}},
    "/alerts": {"get": {
        "summary": "Alerts, newest first, cursor-paginated on (started_at, id).", "security": BEARER,
        "parameters": [
            _q("since", "Alerts that started at or after this time.", TIME),
            _q("until", "Alerts that started before this time.", TIME),
            _q("type", "Comma-separated violation type codes."),
            _q("canteen", "Canteen id."),
            _q("status", "Workflow status.", {"enum": list(STATUSES)}),
            _q("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
            _q("cursor", "Opaque cursor from the previous page's next_cursor.")],
        "responses": {**_ok("One page.", {"type": "object", "properties": {
            "items": {"type": "array", "items": _ref("Alert")}, "next_cursor": {"type": ["string", "null"]}}}),
            **_errors(400, 401, 403)}}},
    "/alerts/stream": {"get": {
        "summary": "Server-sent events of new (`alert`) and updated (`alert_update`) alerts the token may see; "
                   "`resync` when events are missing (reload with GET /alerts).",
        "security": [*BEARER, {"streamTicket": []}],
        "parameters": [{"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                        "description": "Id of the last event received (EventSource sends it when it reconnects): "
                                       "the missed events are sent first, or `resync` when that is not possible."},
                       _q("last_event_id", "The same as the Last-Event-ID header, for a new EventSource."),
                       _q("ticket", "A stream ticket from POST /alerts/stream/tickets, instead of the Authorization "
                                    "header (a browser's EventSource cannot send one).")],
        "responses": {**_ok("Event stream.", {"type": "string"}, "text/event-stream"),
                                          **_errors(401)}}},
    "/alerts/stream/tickets": {"post": {
        "summary": "A ticket for opening the alert stream without an Authorization header (browser EventSource): "
                   "valid 12 h, only for GET /alerts/stream, ends when the token is revoked or the receiver restarts.",
        "security": BEARER,
        "responses": {**_ok("The ticket.", {"type": "object", "required": ["ticket", "expires_in_s", "url"],
                                            "properties": {"ticket": {"type": "string"},
                                                           "expires_in_s": {"type": "integer"},
                                                           "url": {"type": "string"}}}),
                      **_errors(401)}}},
    "/alerts/{id}": {"get": {"summary": "One alert with its workflow transitions.", "security": BEARER,
                             "parameters": [ALERT_ID],
                             "responses": {**_ok("The alert.", _ref("AlertDetail")), **_errors(401, 404)}}},
    "/alerts/{id}/deadline": {"post": {
        "summary": "Regulator: set the rectification deadline of an open alert.", "security": BEARER,
        "parameters": [ALERT_ID],
        "requestBody": _json_body({"type": "object", "required": ["deadline"], "properties": {
            "deadline": TIME, "note": {"type": "string", "maxLength": 1000}}}),
        "responses": {**_ok("The updated alert.", _ref("AlertDetail")), **WORKFLOW_ERRORS}}},
    "/alerts/{id}/rectification": {"post": {
        "summary": "Canteen: submit a rectification (note + JPEG/PNG photo ≤ 5 MB).", "security": BEARER,
        "parameters": [ALERT_ID],
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["note", "photo"], "properties": {
                "note": {"type": "string"}, "photo": {"type": "string", "contentMediaType": "image/jpeg"}}}},
            "application/json": {"schema": {"type": "object", "required": ["note", "photo_base64"], "properties": {
                "note": {"type": "string"}, "photo_base64": {"type": "string", "contentEncoding": "base64"}}}}}},
        "responses": {**_ok("The updated alert.", _ref("AlertDetail")), **WORKFLOW_ERRORS, **_errors(413)}}},
    "/alerts/{id}/review": {"post": {
        "summary": "Regulator: approve or reject a submitted rectification; a rejection needs a new deadline.",
        "security": BEARER, "parameters": [ALERT_ID],
        "requestBody": _json_body({"type": "object", "required": ["decision"], "properties": {
            "decision": {"enum": ["approve", "reject"]}, "note": {"type": "string", "maxLength": 1000},
            "deadline": TIME}}),
        "responses": {**_ok("The updated alert.", _ref("AlertDetail")), **WORKFLOW_ERRORS}}},
    "/media/{sha256}": {"get": {
        "summary": "Snapshot, clip or photo by content hash, if the token may see its alert (or it is public).",
        "security": [*BEARER, {}], "parameters": [_p("sha256", "sha256 hex digest.")],
        "responses": {**_ok("The file.", {"type": "string", "contentMediaType": "application/octet-stream"},
                            "application/octet-stream"), **_errors(400, 404)}}},
    "/stats": {"get": {
        "summary": "Alert counts by type, canteen and day in a range; device online rate.", "security": BEARER,
        "parameters": [_q("since", "Start (default: until − 7 days).", TIME), _q("until", "End (default: now).", TIME)],
        "responses": {**_ok("Counts.", _ref("Stats")), **_errors(400, 401)}}},
    "/canteens/{id}/public": {"patch": {
        "summary": "Edit a canteen's public page: the parts given replace those parts. Admin and regulator (in "
                   "jurisdiction): all; canteen: its own licences and snapshots (pictures of its own boxes).",
        "security": BEARER, "parameters": [_p("id", "Canteen id.")],
        "requestBody": _json_body(_ref("PublicPageEdit")),
        "responses": {**_ok("The public page as it is now shown.", _ref("PublicCanteen")),
                      **_errors(400, 401, 403, 404)}}},
    "/public/canteens/{id}": {"get": {
        "summary": "Public page of a canteen: name, licences, rating, sampling results, public kitchen snapshots.",
        "security": PUBLIC, "parameters": [_p("id", "Canteen id.")],
        "responses": {**_ok("Public data only.", _ref("PublicCanteen")), **_errors(404)}}},
}

_EDIT = PublicPage.model_json_schema(ref_template="#/components/schemas/{model}")
SCHEMAS.update(_EDIT.pop("$defs", {}))
SCHEMAS["PublicPageEdit"] = _EDIT

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "BrightKitchen cloud receiver API", "version": "1.0.0",
             "description": "Alerts, devices and the rectification workflow of 明厨亮灶 supervision. "
                            "Roles: admin, regulator (jurisdiction prefix), canteen (one canteen), public."},
    "servers": [{"url": "/api/v1"}],
    "security": BEARER,
    "paths": PATHS,
    "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                                    "streamTicket": {"type": "apiKey", "in": "query", "name": "ticket"}}},
}
