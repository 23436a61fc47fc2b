"""The ledger rules over the database, and their findings as alerts like the cameras' ones.

A finding becomes a row of `alerts` (device `ledger`, camera = the ledger's Chinese name, the canteen
set, its text in `detail`), with one `push_outbox` row per responsible robot and its export-feed row,
in one transaction; an id already stored is skipped, so a rerun stores nothing twice. The new rows
are returned for the caller to announce (SSE, push router).

- `run_once`: every rule, for every canteen that keeps ledgers, over the last `lookback_days` days
  (the periodic run; `rules_running` runs it every `rules_interval_s`);
- `after_write`: the rules about what was just written (health certificates of the people checked,
  supplier licences, sample times), for the days written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog

from cloud_receiver.config import LedgersConfig
from cloud_receiver.ledgers import rules
from cloud_receiver.ledgers.models import KINDS
from cloud_receiver.ledgers.rules import Finding, Plan
from cloud_receiver.storage.db import Db, iso
from cloud_receiver.storage.schema import ledger_records
from cloud_receiver.workflow import raise_alert

log = structlog.get_logger(__name__)

LEDGER_DEVICE = "ledger"  # `alerts.device_id` of the alerts raised from ledgers
R = ledger_records.c
DAILY_KINDS = ("morning_checks", "samples", "gatherings")


def _rows(db: Db, canteen_id: str, kinds: Iterable[str], lo: date | None = None, hi: date | None = None,
          ) -> list[dict[str, Any]]:
    stmt = sa.select(R.entry_id, R.kind, R.day, R.subject, R.data, R.created_at).where(
        R.canteen_id == canteen_id, R.kind.in_(list(kinds)), R.is_current == 1)
    if lo is not None and hi is not None:
        stmt = stmt.where(R.day >= lo.isoformat(), R.day <= hi.isoformat())
    return db.all(stmt)


def _by_kind(rows: list[dict[str, Any]], kind: str, day: date | None = None) -> list[dict[str, Any]]:
    return [r for r in rows if r["kind"] == kind and (day is None or r["day"] == day.isoformat())]


def findings_for(db: Db, plan: Plan, canteen_id: str, days: list[date], now: datetime) -> list[Finding]:
    """Every rule for one canteen over `days` (three reads: the people, the suppliers, the days' entries)."""
    people = _rows(db, canteen_id, ("staff", "suppliers"))
    staff = _by_kind(people, "staff")
    daily = _rows(db, canteen_id, DAILY_KINDS, min(days), max(days))
    first_sample = db.scalar(sa.select(sa.func.min(R.day)).where(R.canteen_id == canteen_id, R.kind == "samples"))
    out = rules.health_certs(canteen_id, _by_kind(daily, "morning_checks"), {s["entry_id"]: s for s in staff},
                             plan.warn_days)
    out += rules.short_samples(canteen_id, _by_kind(daily, "samples"))
    out += rules.expired_suppliers(canteen_id, _by_kind(people, "suppliers"), plan.today(now), plan)
    for day in days:
        checks = _by_kind(daily, "morning_checks", day)
        if (missing := rules.missing_morning_check(canteen_id, day, now, plan, staff, len(checks))) is not None:
            out.append(missing)
        if first_sample is not None and first_sample <= day.isoformat():  # the canteen keeps a sample ledger
            out += rules.missing_samples(canteen_id, day, now, plan, _by_kind(daily, "samples", day),
                                         _by_kind(daily, "gatherings", day))
    return out


def run_once(db: Db, cfg: LedgersConfig, now: datetime, owner: str, channel: str | None = None,
             ) -> list[dict[str, Any]]:
    """Every rule for every canteen with ledger entries; returns the alert rows stored new."""
    plan = Plan.of(cfg)
    today = plan.today(now)
    days = [today - timedelta(days=n) for n in range(cfg.lookback_days)][::-1]
    found: list[Finding] = []
    for canteen_id in db.all(sa.select(R.canteen_id).distinct()):
        found += findings_for(db, plan, canteen_id["canteen_id"], days, now)
    return raise_alerts(db, found, owner, now, channel)


def after_write(db: Db, cfg: LedgersConfig, canteen_id: str, kind: str, days: Iterable[str], now: datetime,
                owner: str, channel: str | None = None) -> list[dict[str, Any]]:
    """The rules about entries of `kind` just written on `days`; returns the alert rows stored new."""
    plan = Plan.of(cfg)
    wanted = sorted({date.fromisoformat(d) for d in days})
    if kind == "morning_checks" and wanted:
        staff = {s["entry_id"]: s for s in _rows(db, canteen_id, ("staff",))}
        found = rules.health_certs(canteen_id, _rows(db, canteen_id, (kind,), wanted[0], wanted[-1]), staff,
                                   plan.warn_days)
    elif kind == "samples" and wanted:
        found = rules.short_samples(canteen_id, _rows(db, canteen_id, (kind,), wanted[0], wanted[-1]))
    elif kind in ("suppliers", "purchases"):
        found = rules.expired_suppliers(canteen_id, _rows(db, canteen_id, ("suppliers",)), plan.today(now), plan)
    else:
        return []
    return raise_alerts(db, found, owner, now, channel)


def alert_row(f: Finding, now: datetime) -> dict[str, Any]:
    return {"id": f.alert_id, "device_id": LEDGER_DEVICE, "canteen_id": f.canteen_id,
            "camera_id": f"{KINDS[f.ledger].name}台账", "type": f.type, "level": f.level, "state": "start", "rev": 1,
            "started_at": iso(f.at), "boxes_json": "[]", "detail": f.detail, "received_at": iso(now),
            "updated_at": iso(now)}


def raise_alerts(db: Db, findings: Iterable[Finding], owner: str, now: datetime, channel: str | None = None,
                 ) -> list[dict[str, Any]]:
    """Store the findings not stored yet as alerts, with the pushes they owe (workflow/raise_alert.py);
    returns the new alert rows. On PostgreSQL, `channel` (the storage's NOTIFY channel) tells every
    receiver of them in the same transaction, as ingest does (cloud_receiver/ingest/pg_notify.py)."""
    todo = {f.alert_id: f for f in findings}
    if not todo:
        return []
    new = raise_alert.raise_alerts(db, [alert_row(f, now) for f in todo.values()], owner, now, channel)
    if new:
        log.info("ledger_alerts_raised", count=len(new), types=sorted({todo[r["id"]].type for r in new}))
    return new


@contextlib.asynccontextmanager
async def rules_running(storage: Any, cfg: LedgersConfig, publish: Callable[[dict[str, Any]], None],
                        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                        ) -> AsyncIterator[asyncio.Task[None] | None]:
    """Run the rules every `cfg.rules_interval_s` while the block runs (off when `cfg.rules` is false).

    `storage` has `sql` (a Db), `push_owner` and, on PostgreSQL, `channel`; each stored alert row is handed
    to `publish` on the loop."""
    if not cfg.rules:
        yield None
        return
    loop = asyncio.get_running_loop()

    async def run() -> None:
        while True:
            await asyncio.sleep(cfg.rules_interval_s)
            work = loop.run_in_executor(None, run_once, storage.sql, cfg, clock(), storage.push_owner,
                                        getattr(storage, "channel", None))
            try:
                rows = await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait({work}, timeout=10)  # let a run in its thread finish before storage closes
                raise
            except Exception:  # noqa: BLE001 - e.g. the database locked: log, try at the next interval
                log.exception("ledger_rules_failed", retry_in_s=cfg.rules_interval_s)
                continue
            for row in rows:
                publish(row)

    task = asyncio.create_task(run(), name="bk-ledger-rules")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
