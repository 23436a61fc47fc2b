"""The OpenAPI 3.1 document of /api/v1, written as data next to the routes (schemas: `openapi_schemas`).

tests/test_api_openapi.py checks that every registered route is documented here and that every
path documented here is registered; tests/test_api_schemathesis.py runs schemathesis against it.

Status policy, which the document states per operation: 400 = the request does not fit this
document (wrong type, pattern, missing field); 422 = it fits, but what it asks cannot be done
(a deadline already past, a range too long, a snapshot that is not this canteen's picture, a
cursor this API never gave); 409 = the alert's workflow state does not allow the action.
"""

from __future__ import annotations

from typing import Any

from cloud_receiver.api.openapi_schemas import (
    ALERT_ID,
    CANTEEN_ID,
    CURSOR,
    SCHEMAS,
    SHA256,
    TIME_OR_DATE,
    TYPE_LIST,
    ref,
)
from cloud_receiver.workflow.rectify import STATUSES

BEARER = [{"bearer": []}]
PUBLIC: list[dict[str, list[str]]] = []

_TEXT = {400: "The request does not fit this document; the message names the field.",
         401: "No token, or an unknown or revoked one.",
         403: "The token's role or scope does not allow this.", 404: "Not found or not visible to this token.",
         409: "The action does not fit the alert's current workflow status.", 413: "Body or photo too large.",
         414: "URL longer than 4096 bytes.", 415: "The body is not sent as application/json (or multipart/form-data "
         "where allowed).", 422: "Well-formed, but not possible: the message says why.",
         429: "Too many open alert streams (of this token, or in all); retry after `Retry-After` seconds.",
         503: "The alert hub is not running."}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": _TEXT[c], "content": {"application/json": {"schema": ref("Error")}}}
            for c in sorted({*codes, 401, 414})}


def _ok(description: str, schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"200": {"description": description, "content": {media: {"schema": schema}}}}


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _p(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": ref(name)}}}


ALERT = _p("id", "Alert id (ULID / UUIDv7 given by the edge agent).", ALERT_ID)
WORKFLOW_ERRORS = _errors(400, 403, 404, 409, 413, 415, 422)
MEDIA_FILE = {"description": "The file, as the type its bytes are; `Content-Disposition` names it.",
              "content": {t: {"schema": {"type": "string", "format": "binary"}}
                          for t in ("image/jpeg", "video/mp4", "application/octet-stream")}}

PATHS: dict[str, dict[str, Any]] = {
    "/openapi.json": {"get": {"summary": "This document.", "security": PUBLIC,
                              "responses": {**_ok("OpenAPI 3.1 document.", {"type": "object"}), **_errors()}}},
    "/canteens": {"get": {"summary": "Canteens visible to the token.", "security": BEARER,
                          "responses": {**_ok("Canteens.", _list_of("Canteen")), **_errors()}}},
    "/devices": {"get": {"summary": "Edge boxes with online status and last seen time.", "security": BEARER,
                         "responses": {**_ok("Devices.", _list_of("Device")), **_errors()}}},
    "/cameras": {"get": {"summary": "Cameras and their health as last reported.", "security": BEARER,
                         "parameters": [_q("device", "Only this device's cameras.")],
                         "responses": {**_ok("Cameras.", _list_of("Camera")), **_errors()}}},
    "/alerts": {"get": {
        "summary": "Alerts, newest first, cursor-paginated on (started_at, id).", "security": BEARER,
        "parameters": [
            _q("since", "Alerts that started at or after this time.", TIME_OR_DATE),
            _q("until", "Alerts that started before this time.", TIME_OR_DATE),
            _q("type", "Comma-separated violation type codes.", TYPE_LIST),
            _q("canteen", "Canteen id (a canteen token may give only its own: 403 otherwise)."),
            _q("status", "Workflow status.", {"enum": list(STATUSES)}),
            _q("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
            _q("cursor", "The previous page's next_cursor, as given (422 for one this API did not give).", CURSOR)],
        "responses": {**_ok("One page.", {"type": "object", "required": ["items", "next_cursor"], "properties": {
            "items": {"type": "array", "items": ref("Alert")}, "next_cursor": {"type": ["string", "null"]}}}),
            **_errors(400, 403, 422)}}},
    "/alerts/stream": {"get": {
        "summary": "Server-sent events of new (`alert`) and updated (`alert_update`) alerts the token may see; "
                   "`resync` when events are missing (reload with GET /alerts). At most a few streams per token "
                   "and a few hundred in all: 429 beyond.",
        "security": [*BEARER, {"streamTicket": []}],
        "parameters": [{"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                        "description": "Id of the last event received (EventSource sends it when it reconnects): "
                                       "the missed events are sent first, or `resync` when that is not possible."},
                       _q("last_event_id", "The same as the Last-Event-ID header, for a new EventSource."),
                       _q("ticket", "A stream ticket from POST /alerts/stream/tickets, instead of the Authorization "
                                    "header (a browser's EventSource cannot send one).")],
        "responses": {**_ok("Event stream.", {"type": "string"}, "text/event-stream"), **_errors(429, 503)}}},
    "/alerts/stream/tickets": {"post": {
        "summary": "A ticket for opening the alert stream without an Authorization header (browser EventSource): "
                   "valid 12 h, only for GET /alerts/stream, ends when the token is revoked or the receiver restarts.",
        "security": BEARER, "responses": {**_ok("The ticket.", ref("Ticket")), **_errors()}}},
    "/alerts/{id}": {"get": {"summary": "One alert with its workflow transitions.", "security": BEARER,
                             "parameters": [ALERT],
                             "responses": {**_ok("The alert.", ref("AlertDetail")), **_errors(404)}}},
    "/alerts/{id}/deadline": {"post": {
        "summary": "Regulator: set the rectification deadline of an open alert.", "security": BEARER,
        "parameters": [ALERT], "requestBody": _json_body(ref("DeadlineBody")),
        "responses": {**_ok("The updated alert.", ref("AlertDetail")), **WORKFLOW_ERRORS}}},
    "/alerts/{id}/rectification": {"post": {
        "summary": "Canteen: submit a rectification (note + JPEG photo ≤ 5 MB).", "security": BEARER,
        "parameters": [ALERT],
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": ref("RectificationForm")},
            "application/json": {"schema": ref("RectificationJson")}}},
        "responses": {**_ok("The updated alert.", ref("AlertDetail")), **WORKFLOW_ERRORS}}},
    "/alerts/{id}/review": {"post": {
        "summary": "Regulator: approve or reject a submitted rectification; a rejection needs a note and a new "
                   "deadline.", "security": BEARER, "parameters": [ALERT],
        "requestBody": _json_body(ref("ReviewBody")),
        "responses": {**_ok("The updated alert.", ref("AlertDetail")), **WORKFLOW_ERRORS}}},
    "/media/{sha256}": {"get": {
        "summary": "Snapshot, clip or photo by content hash, for tokens that may see the canteen that uploaded it; "
                   "without a token, only snapshots a canteen shows on its public page.",
        "security": [*BEARER, {}], "parameters": [_p("sha256", "sha256 hex digest.", SHA256)],
        "responses": {"200": MEDIA_FILE, **_errors(400, 404)}}},
    "/stats": {"get": {
        "summary": "Alert counts by type, canteen and day in a range; device online rate.", "security": BEARER,
        "parameters": [_q("since", "Start (default: until − 7 days).", TIME_OR_DATE),
                       _q("until", "End (default: now).", TIME_OR_DATE)],
        "responses": {**_ok("Counts.", ref("Stats")), **_errors(400, 422)}}},
    "/canteens/{id}/public": {"patch": {
        "summary": "Edit a canteen's public page: the parts given replace those parts. Admin and regulator (in "
                   "jurisdiction): all; canteen: its own licences and snapshots (pictures of its own boxes).",
        "security": BEARER, "parameters": [_p("id", "Canteen id.", CANTEEN_ID)],
        "requestBody": _json_body(ref("PublicPageEdit")),
        "responses": {**_ok("The public page as it is now shown.", ref("PublicCanteen")),
                      **_errors(400, 403, 404, 413, 415, 422)}}},
    "/public/canteens/{id}": {"get": {
        "summary": "Public page of a canteen: name, licences, rating, sampling results, public kitchen snapshots.",
        "security": PUBLIC, "parameters": [_p("id", "Canteen id.", CANTEEN_ID)],
        "responses": {**_ok("Public data only.", ref("PublicCanteen")), **_errors(404)}}},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "BrightKitchen cloud receiver API", "version": "1.1.0",
             "description": "Alerts, devices and the rectification workflow of 明厨亮灶 supervision. "
                            "Roles: admin, regulator (jurisdiction prefix), canteen (one canteen), public. "
                            "Errors: 400 = does not fit this document, 422 = fits but cannot be done, "
                            "409 = not in this workflow state."},
    "servers": [{"url": "/api/v1"}],
    "security": BEARER,
    "paths": PATHS,
    "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                                    "streamTicket": {"type": "apiKey", "in": "query", "name": "ticket"}}},
}
