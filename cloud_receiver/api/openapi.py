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
from cloud_receiver.ledgers.models import KINDS as LEDGER_KINDS
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
         503: "The service this needs is not running (the alert hub; for commands: the MQTT connection, or the "
              "box is not connected)."}


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
DEVICE = _p("id", "Device id (20 digits).", {"type": "string", "pattern": "^[0-9]{20}$"})
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
    "/devices/{id}/commands": {"post": {
        "summary": "Send a command to a box (admin: any; regulator and canteen: status, snapshot_now, live_start, "
                   "live_stop, playback for boxes they may see). Answered 200 once the broker took it; the box's "
                   "result arrives later (GET the command). 503 when the box is not connected.",
        "security": BEARER, "parameters": [DEVICE], "requestBody": _json_body(ref("CommandBody")),
        "responses": {**_ok("Sent; the command with its state (pending until the box answers).", ref("Command")),
                      **_errors(400, 403, 404, 413, 415, 503)}}},
    "/devices/{id}/commands/{cid}": {"get": {
        "summary": "A command and its state: pending, ok, failed (with the box's error), expired, not_sent.",
        "security": BEARER, "parameters": [DEVICE, _p("cid", "Command id.", {"type": "string"})],
        "responses": {**_ok("The command.", ref("Command")), **_errors(404)}}},
    "/live/{id}/{camera}": {"get": {
        "summary": "Live video of a camera over a WebSocket (upgrade this GET): first a JSON text message "
                   "`{\"codec\": \"avc1.42C01E\"}`, then binary fragmented-MP4 pieces to append to a Media Source "
                   "Extensions SourceBuffer. Admin, regulators of the jurisdiction and the canteen itself; a browser "
                   "authenticates with the console's session cookie or `?ticket=`; another Origin is refused (403).",
        "security": [*BEARER, {"streamTicket": []}],
        "parameters": [DEVICE, _p("camera", "Camera id.", {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}),
                       _q("ticket", "A stream ticket (POST /alerts/stream/tickets), for a browser.")],
        "responses": {"101": {"description": "Switching to the WebSocket protocol."},
                      **_ok("Not used: a GET without the WebSocket upgrade headers is answered 400.", {"type": "object"}),
                      **_errors(400, 403, 404, 503)}}},
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
                   "without a token, nothing (404): the public page serves blurred copies at /p/{id}/snapshots/.",
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

# the export for an upper platform (api/export.py): every 200 is signed; no key configured = 503, never unsigned data
_SIGNED = {"X-BK-Signature": {"required": True, "description": "`sha256=` + hex HMAC-SHA256, with the export key, of "
                              "X-BK-Timestamp + `.` + the body bytes.",
                              "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"}},
           "X-BK-Timestamp": {"required": True, "description": "When the answer was signed, Unix seconds.",
                              "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"}},
           "X-BK-Key-Id": {"required": True, "description": "Name of the key that signed it (export.key_id).",
                           "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}}}
_NO_KEY = {"503": {"description": "No export key is configured (export.key_env): the export sends nothing unsigned.",
                   "content": {"application/json": {"schema": ref("Error")}}}}


def _signed(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    ok = _ok(description, schema)
    ok["200"]["headers"] = _SIGNED
    return ok


PATHS.update({
    "/export/changes": {"get": {
        "summary": "Upper platform: alert changes after a cursor (new alert, higher revision, workflow action), oldest "
                   "first, each with the alert's current state. Admin, or regulator (its jurisdiction). Signed.",
        "security": BEARER,
        "parameters": [_q("cursor", "next_cursor of the previous answer, as given (none: from the start; 422 for one "
                                    "this API did not give).", CURSOR),
                       _q("limit", "Most changes in the answer.", {"type": "integer", "minimum": 1, "maximum": 1000,
                                                                   "default": 100})],
        "responses": {**_signed("Changes.", ref("ExportChanges")), **_errors(400, 403, 422), **_NO_KEY}}},
    "/export/canteens": {"get": {
        "summary": "Upper platform: per canteen, its boxes now (online rate, last seen) and the rectification of the "
                   "alerts that started in the period. Admin, or regulator (its jurisdiction). Signed.",
        "security": BEARER,
        "parameters": [_q("since", "Start of the period (default: until − 30 days).", TIME_OR_DATE),
                       _q("until", "End of the period (default: now).", TIME_OR_DATE)],
        "responses": {**_signed("Canteens.", ref("ExportCanteens")), **_errors(400, 403, 422), **_NO_KEY}}},
})

# the canteens' ledgers, 自律台账 (api/ledgers.py, docs/ledgers.md)
_CANTEEN = _p("id", "Canteen id.", CANTEEN_ID)
_KIND = _p("kind", "The ledger: " + ", ".join(f"{k} {v.name}" for k, v in LEDGER_KINDS.items()) + ".",
           {"enum": list(LEDGER_KINDS)})
_RID = _p("rid", "Entry id.", ALERT_ID)
_DAYS = [_q("from", "First day (local date), inclusive.", {"type": "string", "format": "date"}),
         _q("to", "Last day (local date), inclusive.", {"type": "string", "format": "date"})]
_READ = "Admin; regulator (its jurisdiction); canteen (its own)."
_WRITE = "Admin; canteen (its own). A regulator gets 403."
_WRITE_ERRORS = _errors(400, 403, 404, 409, 413, 415, 422)
PATHS.update({
    "/canteens/{id}/ledgers/{kind}": {
        "get": {"summary": f"Entries of a ledger (current revisions), newest day first, cursor-paginated. {_READ}",
                "security": BEARER, "parameters": [_CANTEEN, _KIND, *_DAYS,
                    _q("subject", "Only entries about this: staff id (morning_checks), supplier id (purchases), "
                                  "meal 早/午/晚 (samples, gatherings).", {"type": "string", "minLength": 1,
                                                                          "maxLength": 64}),
                    _q("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
                    _q("cursor", "The previous page's next_cursor, as given (422 for one this API did not give).",
                       CURSOR)],
                "responses": {**_ok("One page.", ref("LedgerPage")), **_errors(400, 404, 422)}},
        "post": {"summary": f"Add an entry: the body is the ledger's own model (e.g. Sample for samples). {_WRITE} "
                            "Photos are uploaded first (POST /canteens/{id}/ledger-photos).",
                 "security": BEARER, "parameters": [_CANTEEN, _KIND], "requestBody": _json_body(ref("LedgerEntryBody")),
                 "responses": {**_ok("The entry.", ref("LedgerEntry")), **_WRITE_ERRORS}}},
    "/canteens/{id}/morning-checks": {"post": {
        "summary": f"每日晨检 of a whole shift: one entry per person, all stored or none. {_WRITE}",
        "security": BEARER, "parameters": [_CANTEEN], "requestBody": _json_body(ref("MorningCheckBatch")),
        "responses": {**_ok("The entries.", ref("LedgerEntries")), **_WRITE_ERRORS}}},
    "/canteens/{id}/ledgers/{kind}/export.xlsx": {"get": {
        "summary": f"A ledger as an XLSX workbook with Chinese headers (at most 5000 entries: 422 beyond). {_READ}",
        "security": BEARER, "parameters": [_CANTEEN, _KIND, *_DAYS],
        "responses": {"200": {"description": "The workbook.", "content": {
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                "schema": {"type": "string", "format": "binary"}}}}, **_errors(400, 404, 422)}}},
    "/canteens/{id}/ledgers/{kind}/{rid}": {
        "get": {"summary": f"An entry with all its revisions and the comments on it. {_READ}", "security": BEARER,
                "parameters": [_CANTEEN, _KIND, _RID],
                "responses": {**_ok("The entry.", ref("LedgerEntryDetail")), **_errors(400, 404)}},
        "put": {"summary": "Replace an entry in place, within 24 h of when its current revision was written (422 "
                           f"later: correct it with a revision). {_WRITE}",
                "security": BEARER, "parameters": [_CANTEEN, _KIND, _RID],
                "requestBody": _json_body(ref("LedgerEntryBody")),
                "responses": {**_ok("The entry.", ref("LedgerEntry")), **_WRITE_ERRORS}}},
    "/canteens/{id}/ledgers/{kind}/{rid}/revisions": {"post": {
        "summary": f"Correct an entry: a new revision with a reason; the older one stays readable. {_WRITE}",
        "security": BEARER, "parameters": [_CANTEEN, _KIND, _RID],
        "requestBody": _json_body(ref("LedgerCorrectionBody")),
        "responses": {**_ok("The entry with its revisions.", ref("LedgerEntryDetail")), **_WRITE_ERRORS}}},
    "/canteens/{id}/ledgers/{kind}/{rid}/comments": {"post": {
        "summary": "Comment on an entry: admin, a regulator of the jurisdiction, or the canteen (a reply).",
        "security": BEARER, "parameters": [_CANTEEN, _KIND, _RID],
        "requestBody": _json_body(ref("CommentBody")),
        "responses": {**_ok("The entry with its comments.", ref("LedgerEntryDetail")),
                      **_errors(400, 404, 413, 415)}}},
    "/canteens/{id}/ledger-photos": {"post": {
        "summary": f"Upload a JPEG (≤ 5 MB) for ledger entries to name by its sha256. {_WRITE} Readable with "
                   "GET /media/{sha256} by whoever may see the canteen.",
        "security": BEARER, "parameters": [_CANTEEN],
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": ref("LedgerPhotoForm")},
                                                      "application/json": {"schema": ref("LedgerPhotoJson")}}},
        "responses": {**_ok("The stored photo.", ref("LedgerPhoto")), **_errors(400, 403, 404, 413, 415, 422)}}},
    "/canteens/{id}/days/{day}": {"get": {
        "summary": "One day of a canteen for tracing: morning checks and who worked, staff not checked, purchases "
                   f"with supplier and licence state, samples, disinfection, waste, ledger alerts. {_READ}",
        "security": BEARER,
        "parameters": [_CANTEEN, _p("day", "Local date.", {"type": "string", "format": "date"})],
        "responses": {**_ok("The day.", ref("LedgerDay")), **_errors(400, 404)}}},
})

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
