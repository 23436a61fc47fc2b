"""The whole chain on real parts: footage → edge agent → Mosquitto (dynsec) → cloud receiver → API.

Uses the demo's own start-up (scripts/demo.py), so the README's demo command is tested too.
"""

from __future__ import annotations

import hashlib
import re
import urllib.request
from pathlib import Path

import pytest
from support.waiting import wait_until

from scripts.demo import Stack, start_stack

pytestmark = pytest.mark.system

EVENT = re.compile(r"EVENT (\w+)\s+(\w+)\s+camera=(\S+) id=(\w+) rev=(\d+)")


def box_events(stack: Stack) -> dict[str, int]:
    """Alert id → highest revision, as the box printed them."""
    out: dict[str, int] = {}
    for line in (stack.work / "events.log").read_text(encoding="utf-8").splitlines():
        m = EVENT.search(line)
        if m:
            out[m[4]] = max(out.get(m[4], -1), int(m[5]))
    return out


def cloud_alerts(stack: Stack) -> list[dict]:
    items, cursor = [], None
    while True:
        page = stack.get("/alerts?limit=200" + (f"&cursor={cursor}" if cursor else ""))
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def in_sync(stack: Stack) -> bool:
    """Every event the box made is in the cloud once, at the box's latest revision, snapshot complete."""
    box = box_events(stack)
    cloud = cloud_alerts(stack)
    ids = [a["id"] for a in cloud]
    return (bool(box) and len(ids) == len(set(ids)) and {a["id"]: a["rev"] for a in cloud} == box
            and all(_snapshot_ok(stack, a) for a in cloud))


def _snapshot_ok(stack: Stack, alert: dict) -> bool:
    sha = alert.get("snapshot_sha256")
    if not sha:
        return alert["type"] == "camera_offline"  # the only type without a picture
    try:
        return hashlib.sha256(stack.get_bytes(f"/media/{sha}")).hexdigest() == sha
    except OSError:
        return False


@pytest.fixture
def stack(tmp_path: Path):
    s = start_stack(tmp_path / "demo", echo=False)
    yield s
    s.stop()


def test_alert_reaches_the_api_with_the_snapshot_the_box_made(stack: Stack) -> None:
    """The box's event arrives through the broker; the stored snapshot's sha256 is the box's."""
    assert wait_until(lambda: box_events(stack), 60, step=0.5), (stack.work / "agent.log").read_text()[-3000:]
    assert wait_until(lambda: in_sync(stack), 30, step=0.5)
    from edge_agent.outbox.store import Outbox

    box = Outbox(stack.work / "agent.db", device_id=stack.device_id)
    try:
        made = {a.id: a.snapshot.sha256 for a in box.recent_events(50) if a.snapshot}
    finally:
        box.close()
    stored = {a["id"]: a["snapshot_sha256"] for a in cloud_alerts(stack)}
    assert made and all(stored[i] == sha for i, sha in made.items() if i in stored)
    media = list((stack.work / "media").rglob("*"))
    files = {hashlib.sha256(p.read_bytes()).hexdigest() for p in media if p.is_file()}
    assert set(stored.values()) <= files  # stored on disk by content hash
    assert all(a["type"] == "intrusion_off_hours" or a["type"] in {"phone_use", "animal"} for a in cloud_alerts(stack))
    with urllib.request.urlopen(stack.api.removesuffix("/api/v1") + "/login", timeout=10) as page:  # the console
        assert page.status == 200 and "明厨亮灶" in page.read().decode()


def box_types(stack: Stack) -> list[tuple[str, str]]:
    lines = (stack.work / "events.log").read_text(encoding="utf-8").splitlines()
    return [(m[2], m[1]) for m in map(EVENT.search, lines) if m]


def test_broker_outage_loses_nothing_and_doubles_nothing(stack: Stack) -> None:
    """Broker stopped while the box raises events (its camera goes away and comes back):
    after the restart the cloud has every event exactly once, at its latest revision."""
    assert wait_until(lambda: in_sync(stack), 60, step=0.5)
    clip = stack.work / "kitchen-camera.mp4"
    stack.broker.stop()
    clip.rename(clip.with_suffix(".away"))  # the camera disappears during the outage
    assert wait_until(lambda: ("camera_offline", "start") in box_types(stack), 40, step=1.0)
    clip.with_suffix(".away").rename(clip)
    assert wait_until(lambda: ("camera_offline", "end") in box_types(stack), 40, step=1.0)
    stack.broker.restart()
    assert wait_until(lambda: in_sync(stack), 60, step=0.5), (box_events(stack), [(a["id"], a["rev"]) for a in cloud_alerts(stack)])
