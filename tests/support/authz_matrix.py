"""Who may do what, as data: one row per (endpoint, role) with the expected answer for a target in the
caller's own canteen, in another canteen of the same region, and in another region.

The world (`api_kit.seed`): canteens C1 and C2 in region 640502, C3 in region 640521, one box each,
and an open alert with a snapshot per canteen (`api_server.seed_alerts`: `L-C1`, `L-C2`, `L-C3`).
The callers all live at C1: the regulator's scope is 640502 (C1 and C2), the canteen token is C1's.
So for every row: own = C1, other canteen = C2, other region = C3.

An expected value is a status code, or for list endpoints (answered 200 to every logged-in caller)
SEEN / HIDDEN: the target's rows are in the answer, or filtered out.

To add an endpoint (the web console and the ledgers of later issues do): add a `Probe` to PROBES
saying how to ask it about a target canteen, and its rows to MATRIX. tests/test_api_authz_matrix.py
runs every row against a fresh receiver and fails on any cell that differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SEEN = "seen"  # 200, and the target canteen's rows are in the answer
HIDDEN = "hidden"  # 200, and the target canteen's rows are not
Expect = int | str

ROLES = ("admin", "regulator", "canteen", "anonymous")
TARGETS = {"own": "C1", "other_canteen": "C2", "other_region": "C3"}
JPEG_B64 = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDA=="  # the start of a JPEG: enough for the check
STAFF = {"name": "张三", "health_cert_no": "NX2024-0001", "health_cert_issued": "2024-01-02",
         "health_cert_expiry": "2099-01-01"}  # a staff ledger entry


@dataclass(frozen=True)
class Target:
    """What the probe may name about the target canteen."""

    canteen: str
    device: str
    alert: str
    snapshot: str
    kind: str = "staff"  # the ledger the ledger probes use (api_kit.seed gives every canteen these entries)
    rid: str = "seed-staff"
    day: str = "2024-05-06"


@dataclass(frozen=True)
class Probe:
    """How to ask one endpoint about a target: method, path (format fields of `Target`), JSON body, and for
    list endpoints how to tell whether the target's rows are in the answer."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    shows: Callable[[Any, Target], bool] | None = None  # list endpoints: does the answer contain the target?
    notes: str = field(default="", compare=False)


def _items_have(key: str) -> Callable[[Any, Target], bool]:
    return lambda body, t: any(item.get(key) in (t.canteen, t.device, t.alert) for item in body["items"])


PROBES: dict[str, Probe] = {
    "list alerts": Probe("GET", "/api/v1/alerts", shows=_items_have("id")),
    "list alerts of canteen": Probe("GET", "/api/v1/alerts?canteen={canteen}", shows=_items_have("id")),
    "get alert": Probe("GET", "/api/v1/alerts/{alert}"),
    "set deadline": Probe("POST", "/api/v1/alerts/{alert}/deadline", {"deadline": "2099-01-01T00:00:00+08:00"}),
    "review": Probe("POST", "/api/v1/alerts/{alert}/review", {"decision": "approve"}),
    "rectify": Probe("POST", "/api/v1/alerts/{alert}/rectification", {"note": "已整改", "photo_base64": JPEG_B64}),
    "get snapshot": Probe("GET", "/api/v1/media/{snapshot}"),
    "list devices": Probe("GET", "/api/v1/devices", shows=_items_have("id")),
    "list cameras of device": Probe("GET", "/api/v1/cameras?device={device}", shows=_items_have("device_id")),
    "list canteens": Probe("GET", "/api/v1/canteens", shows=_items_have("id")),
    "stats": Probe("GET", "/api/v1/stats", shows=lambda body, t: t.canteen in body["by_canteen"]),
    "edit public licences": Probe("PATCH", "/api/v1/canteens/{canteen}/public", {"licences": []}),
    "edit public rating": Probe("PATCH", "/api/v1/canteens/{canteen}/public", {"rating": "B"}),
    "public page": Probe("GET", "/api/v1/public/canteens/{canteen}"),
    "stream ticket": Probe("POST", "/api/v1/alerts/stream/tickets"),
    # this world has no broker: a command the caller may send gets as far as publishing (503)
    "send status command": Probe("POST", "/api/v1/devices/{device}/commands", {"name": "status"}),
    "send config command": Probe("POST", "/api/v1/devices/{device}/commands",
                                 {"name": "config_push", "args": {"config": "device: {}"}}),
    "get command": Probe("GET", "/api/v1/devices/{device}/commands/probe-cmd"),  # seeded for every box
    # the live WebSocket: who may watch is decided before the upgrade (no broker here: 503 for those who may)
    "watch live": Probe("GET", "/api/v1/live/{device}/cam1"),
    "export changes": Probe("GET", "/api/v1/export/changes?limit=1000",
                            shows=lambda body, t: any(i["alert"]["id"] == t.alert for i in body["items"])),
    "export canteens": Probe("GET", "/api/v1/export/canteens", shows=_items_have("canteen_id")),
    # the canteens' ledgers (api/ledgers.py): every canteen has staff entry `seed-staff` (api_kit.seed)
    "list ledger": Probe("GET", "/api/v1/canteens/{canteen}/ledgers/{kind}"),
    "add ledger entry": Probe("POST", "/api/v1/canteens/{canteen}/ledgers/{kind}", STAFF),
    "shift morning checks": Probe("POST", "/api/v1/canteens/{canteen}/morning-checks", {
        "day": "2024-05-06", "checks": [{"staff_id": "seed-staff", "temperature_c": 36.5, "hand_wound": False,
                                         "diarrhea": False, "fever": False, "cough": False, "fit_to_work": True}]}),
    "ledger xlsx": Probe("GET", "/api/v1/canteens/{canteen}/ledgers/{kind}/export.xlsx"),
    "get ledger entry": Probe("GET", "/api/v1/canteens/{canteen}/ledgers/{kind}/{rid}"),
    "edit ledger entry": Probe("PUT", "/api/v1/canteens/{canteen}/ledgers/{kind}/{rid}", STAFF),
    "correct ledger entry": Probe("POST", "/api/v1/canteens/{canteen}/ledgers/{kind}/{rid}/revisions",
                                  {"reason": "健康证编号录错", "data": STAFF}),
    "comment ledger entry": Probe("POST", "/api/v1/canteens/{canteen}/ledgers/{kind}/{rid}/comments",
                                  {"text": "请补充健康证照片"}),
    "upload ledger photo": Probe("POST", "/api/v1/canteens/{canteen}/ledger-photos", {"photo_base64": JPEG_B64}),
    "ledger day": Probe("GET", "/api/v1/canteens/{canteen}/days/{day}"),
}

# endpoint, role -> (own canteen, other canteen, other region)
MATRIX: dict[tuple[str, str], tuple[Expect, Expect, Expect]] = {
    ("list alerts", "admin"): (SEEN, SEEN, SEEN),
    ("list alerts", "regulator"): (SEEN, SEEN, HIDDEN),
    ("list alerts", "canteen"): (SEEN, HIDDEN, HIDDEN),
    ("list alerts", "anonymous"): (401, 401, 401),
    ("list alerts of canteen", "admin"): (SEEN, SEEN, SEEN),
    ("list alerts of canteen", "regulator"): (SEEN, SEEN, HIDDEN),
    ("list alerts of canteen", "canteen"): (SEEN, 403, 403),
    ("list alerts of canteen", "anonymous"): (401, 401, 401),
    ("get alert", "admin"): (200, 200, 200),
    ("get alert", "regulator"): (200, 200, 404),
    ("get alert", "canteen"): (200, 404, 404),
    ("get alert", "anonymous"): (401, 401, 401),
    ("set deadline", "admin"): (200, 200, 200),
    ("set deadline", "regulator"): (200, 200, 404),
    ("set deadline", "canteen"): (403, 404, 404),
    ("set deadline", "anonymous"): (401, 401, 401),
    ("review", "admin"): (409, 409, 409),  # allowed, but nothing was submitted yet
    ("review", "regulator"): (409, 409, 404),
    ("review", "canteen"): (403, 404, 404),
    ("review", "anonymous"): (401, 401, 401),
    ("rectify", "admin"): (403, 403, 403),
    ("rectify", "regulator"): (403, 403, 403),
    ("rectify", "canteen"): (200, 404, 404),
    ("rectify", "anonymous"): (401, 401, 401),
    ("get snapshot", "admin"): (200, 200, 200),
    ("get snapshot", "regulator"): (200, 200, 404),
    ("get snapshot", "canteen"): (200, 404, 404),
    ("get snapshot", "anonymous"): (404, 404, 404),  # never, even on a public page: the public gets blurred copies
    ("list devices", "admin"): (SEEN, SEEN, SEEN),
    ("list devices", "regulator"): (SEEN, SEEN, HIDDEN),
    ("list devices", "canteen"): (SEEN, HIDDEN, HIDDEN),
    ("list devices", "anonymous"): (401, 401, 401),
    ("list cameras of device", "admin"): (SEEN, SEEN, SEEN),
    ("list cameras of device", "regulator"): (SEEN, SEEN, HIDDEN),
    ("list cameras of device", "canteen"): (SEEN, HIDDEN, HIDDEN),
    ("list cameras of device", "anonymous"): (401, 401, 401),
    ("list canteens", "admin"): (SEEN, SEEN, SEEN),
    ("list canteens", "regulator"): (SEEN, SEEN, HIDDEN),
    ("list canteens", "canteen"): (SEEN, HIDDEN, HIDDEN),
    ("list canteens", "anonymous"): (401, 401, 401),
    ("stats", "admin"): (SEEN, SEEN, SEEN),
    ("stats", "regulator"): (SEEN, SEEN, HIDDEN),
    ("stats", "canteen"): (SEEN, HIDDEN, HIDDEN),
    ("stats", "anonymous"): (401, 401, 401),
    ("edit public licences", "admin"): (200, 200, 200),
    ("edit public licences", "regulator"): (200, 200, 404),
    ("edit public licences", "canteen"): (200, 404, 404),
    ("edit public licences", "anonymous"): (401, 401, 401),
    ("edit public rating", "admin"): (200, 200, 200),
    ("edit public rating", "regulator"): (200, 200, 404),
    ("edit public rating", "canteen"): (403, 404, 404),  # the rating is the regulator's finding
    ("edit public rating", "anonymous"): (401, 401, 401),
    ("public page", "admin"): (200, 200, 200),
    ("public page", "regulator"): (200, 200, 200),
    ("public page", "canteen"): (200, 200, 200),
    ("public page", "anonymous"): (200, 200, 200),
    ("stream ticket", "admin"): (200, 200, 200),  # not about a canteen: the same answer for every target
    ("stream ticket", "regulator"): (200, 200, 200),
    ("stream ticket", "canteen"): (200, 200, 200),
    ("stream ticket", "anonymous"): (401, 401, 401),
    ("send status command", "admin"): (503, 503, 503),
    ("send status command", "regulator"): (503, 503, 404),
    ("send status command", "canteen"): (503, 404, 404),
    ("send status command", "anonymous"): (401, 401, 401),
    ("send config command", "admin"): (503, 503, 503),
    ("send config command", "regulator"): (403, 403, 404),  # configuration is the admin's
    ("send config command", "canteen"): (403, 404, 404),
    ("send config command", "anonymous"): (401, 401, 401),
    ("get command", "admin"): (200, 200, 200),
    ("get command", "regulator"): (200, 200, 404),
    ("get command", "canteen"): (200, 404, 404),
    ("get command", "anonymous"): (401, 401, 401),
    ("watch live", "admin"): (503, 503, 503),
    ("watch live", "regulator"): (503, 503, 404),
    ("watch live", "canteen"): (503, 404, 404),
    ("watch live", "anonymous"): (401, 401, 401),  # the public never sees live video (faces cannot be blurred)
    ("export changes", "admin"): (SEEN, SEEN, SEEN),
    ("export changes", "regulator"): (SEEN, SEEN, HIDDEN),
    ("export changes", "canteen"): (403, 403, 403),  # the export is for the upper platform, not for a canteen
    ("export changes", "anonymous"): (401, 401, 401),
    ("export canteens", "admin"): (SEEN, SEEN, SEEN),
    ("export canteens", "regulator"): (SEEN, SEEN, HIDDEN),
    ("export canteens", "canteen"): (403, 403, 403),
    ("export canteens", "anonymous"): (401, 401, 401),
    # the ledgers: reading like a canteen's alerts, writing only by the canteen itself (and admin)
    ("list ledger", "admin"): (200, 200, 200),
    ("list ledger", "regulator"): (200, 200, 404),
    ("list ledger", "canteen"): (200, 404, 404),
    ("list ledger", "anonymous"): (401, 401, 401),
    ("add ledger entry", "admin"): (200, 200, 200),
    ("add ledger entry", "regulator"): (403, 403, 404),
    ("add ledger entry", "canteen"): (200, 404, 404),
    ("add ledger entry", "anonymous"): (401, 401, 401),
    ("shift morning checks", "admin"): (200, 200, 200),
    ("shift morning checks", "regulator"): (403, 403, 404),
    ("shift morning checks", "canteen"): (200, 404, 404),
    ("shift morning checks", "anonymous"): (401, 401, 401),
    ("ledger xlsx", "admin"): (200, 200, 200),
    ("ledger xlsx", "regulator"): (200, 200, 404),
    ("ledger xlsx", "canteen"): (200, 404, 404),
    ("ledger xlsx", "anonymous"): (401, 401, 401),
    ("get ledger entry", "admin"): (200, 200, 200),
    ("get ledger entry", "regulator"): (200, 200, 404),
    ("get ledger entry", "canteen"): (200, 404, 404),
    ("get ledger entry", "anonymous"): (401, 401, 401),
    ("edit ledger entry", "admin"): (200, 200, 200),
    ("edit ledger entry", "regulator"): (403, 403, 404),
    ("edit ledger entry", "canteen"): (200, 404, 404),
    ("edit ledger entry", "anonymous"): (401, 401, 401),
    ("correct ledger entry", "admin"): (200, 200, 200),
    ("correct ledger entry", "regulator"): (403, 403, 404),
    ("correct ledger entry", "canteen"): (200, 404, 404),
    ("correct ledger entry", "anonymous"): (401, 401, 401),
    ("comment ledger entry", "admin"): (200, 200, 200),
    ("comment ledger entry", "regulator"): (200, 200, 404),
    ("comment ledger entry", "canteen"): (200, 404, 404),
    ("comment ledger entry", "anonymous"): (401, 401, 401),
    ("upload ledger photo", "admin"): (200, 200, 200),
    ("upload ledger photo", "regulator"): (403, 403, 404),
    ("upload ledger photo", "canteen"): (200, 404, 404),
    ("upload ledger photo", "anonymous"): (401, 401, 401),
    ("ledger day", "admin"): (200, 200, 200),
    ("ledger day", "regulator"): (200, 200, 404),
    ("ledger day", "canteen"): (200, 404, 404),
    ("ledger day", "anonymous"): (401, 401, 401),
}


def cases() -> list[tuple[str, str, str, Expect]]:
    """(endpoint, role, target name, expected) for every cell of the table."""
    return [(endpoint, role, target, expected[i])
            for (endpoint, role), expected in MATRIX.items() for i, target in enumerate(TARGETS)]
