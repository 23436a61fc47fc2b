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


@dataclass(frozen=True)
class Target:
    """What the probe may name about the target canteen."""

    canteen: str
    device: str
    alert: str
    snapshot: str


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
    ("get snapshot", "anonymous"): (404, 404, 404),  # not on a public page
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
}


def cases() -> list[tuple[str, str, str, Expect]]:
    """(endpoint, role, target name, expected) for every cell of the table."""
    return [(endpoint, role, target, expected[i])
            for (endpoint, role), expected in MATRIX.items() for i, target in enumerate(TARGETS)]
