"""The ledger rules: pure functions from ledger rows to findings, each a future row of `alerts`.

A row here is a dict as `store` reads it: `entry_id`, `day` (YYYY-MM-DD), `subject`, `data` (a dict),
`created_at` (ISO text). Nothing here reads a clock or a database: `runner` does and passes `now`.

A finding's alert id is derived from (rule, canteen, subject, day), so running the rules again finds
the same ids and stores nothing twice. Which day a finding is "about" decides how often it recurs:
an expired 健康证 once per day the person is checked, an expiring one once per expiry date, a missing
晨检 once per school day, a missing sample once per meal and day, a short sample once per sample, an
expired supplier licence once per expiry date.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from cloud_receiver.config import LedgersConfig
from cloud_receiver.ledgers.models import MEALS, SAMPLE_MIN_HOURS

LEVELS = {"health_cert_expiring": "info"}  # every other ledger finding is a warning
Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finding:
    type: str  # alert type (bk_contract.violations.LEDGER_ALERT_NAMES)
    canteen_id: str
    subject: str  # the staff or supplier entry, the meal, the sample entry, or "canteen"
    day: date  # the day it is about
    at: datetime  # when the alert starts
    detail: str  # what happened, in Chinese, for people
    ledger: str  # the ledger kind to look at

    @property
    def alert_id(self) -> str:
        key = f"{self.type}|{self.canteen_id}|{self.subject}|{self.day.isoformat()}"
        return "ledger-" + hashlib.sha256(key.encode()).hexdigest()[:40]

    @property
    def level(self) -> str:
        return LEVELS.get(self.type, "warning")


@dataclass(frozen=True)
class Plan:
    """What is due when, in the canteens' local time (from the `ledgers` config section)."""

    tz: timezone
    school_days: frozenset[int]
    holidays: frozenset[date]
    morning_check_by: time
    meals: tuple[str, ...]
    canteen_meals: dict[str, tuple[str, ...]]
    sample_due: dict[str, time]
    warn_days: int

    @classmethod
    def of(cls, cfg: LedgersConfig) -> Plan:
        return cls(tz=timezone(timedelta(hours=cfg.tz_hours)), school_days=frozenset(cfg.school_days),
                   holidays=frozenset(cfg.holidays), morning_check_by=time.fromisoformat(cfg.morning_check_by),
                   meals=tuple(cfg.meals), canteen_meals={k: tuple(v) for k, v in cfg.canteen_meals.items()},
                   sample_due={k: time.fromisoformat(v) for k, v in cfg.sample_due.items()},
                   warn_days=cfg.health_cert_warn_days)

    def school_day(self, day: date) -> bool:
        return day.isoweekday() in self.school_days and day not in self.holidays

    def at(self, day: date, when: time) -> datetime:
        """A local day and time of day as an aware datetime."""
        return datetime.combine(day, when, tzinfo=self.tz)

    def today(self, now: datetime) -> date:
        return now.astimezone(self.tz).date()

    def served(self, canteen_id: str, day: date) -> tuple[str, ...]:
        """The meals a canteen serves that day by its plan (gatherings add theirs: see `missing_samples`)."""
        return self.canteen_meals.get(canteen_id, self.meals) if self.school_day(day) else ()


def _day(row: Row) -> date:
    return date.fromisoformat(row["day"])


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def health_certs(canteen_id: str, checks: Iterable[Row], staff: dict[str, Row], warn_days: int) -> list[Finding]:
    """A person checked on a day after their 健康证 expired (`health_cert_expired`), or within `warn_days`
    of its expiry (`health_cert_expiring`). `staff`: entry id -> the staff row."""
    out = []
    for check in checks:
        person = staff.get(check["data"].get("staff_id"))
        if person is None:
            continue
        p, day = person["data"], _day(check)
        expiry = date.fromisoformat(p["health_cert_expiry"])
        at = _time(check["created_at"])
        who = f"{p['name']}（健康证 {p['health_cert_no']}）"
        if expiry < day:
            out.append(Finding("health_cert_expired", canteen_id, person["entry_id"], day, at,
                               f"{who}的健康证已于 {expiry} 过期，{day} 仍在晨检名单中，须停止从事接触直接入口食品的工作并重新体检",
                               "staff"))
        elif (expiry - day).days <= warn_days:
            out.append(Finding("health_cert_expiring", canteen_id, person["entry_id"], expiry, at,
                               f"{who}的健康证将于 {expiry} 到期，请及时安排体检换证", "staff"))
    return out


def missing_morning_check(canteen_id: str, day: date, now: datetime, plan: Plan, staff: Iterable[Row],
                          checks_that_day: int) -> Finding | None:
    """No 晨检 recorded by `morning_check_by` on a school day, for a canteen with active staff registered by then."""
    due = plan.at(day, plan.morning_check_by)
    if not plan.school_day(day) or now < due or checks_that_day:
        return None
    active = [s for s in staff if s["data"].get("active", True) and _day(s) <= day]
    if not active:
        return None
    return Finding("morning_check_missing", canteen_id, "canteen", day, due,
                   f"{day} 截至 {plan.morning_check_by:%H:%M} 未录入晨检记录（在岗从业人员 {len(active)} 人）",
                   "morning_checks")


def missing_samples(canteen_id: str, day: date, now: datetime, plan: Plan, samples: Iterable[Row],
                    gatherings: Iterable[Row]) -> list[Finding]:
    """A meal served that day (by the plan, or by a registered gathering) without a sample by its due time."""
    served = set(plan.served(canteen_id, day)) | {g["subject"] for g in gatherings if g.get("subject") in MEALS}
    kept = {s["subject"] for s in samples}
    out = []
    for meal in (m for m in MEALS if m in served and m not in kept):
        due = plan.at(day, plan.sample_due[meal])
        if now >= due:
            out.append(Finding("sample_missing", canteen_id, meal, day, due, f"{day} {meal}餐未录入留样记录", "samples"))
    return out


def short_samples(canteen_id: str, samples: Iterable[Row]) -> list[Finding]:
    """A sample thrown away (or planned to be) less than SAMPLE_MIN_HOURS after it was taken."""
    out = []
    for s in samples:
        d = s["data"]
        start = _time(d["kept_from"])
        end = _time(d.get("discarded_at") or d["kept_until"])
        hours = (end - start).total_seconds() / 3600
        if hours < SAMPLE_MIN_HOURS:
            out.append(Finding("sample_too_short", canteen_id, s["entry_id"], _day(s), end,
                               f"{s['day']} {d['meal']}餐「{d['dish']}」留样仅 {hours:.1f} 小时，不足 {SAMPLE_MIN_HOURS} 小时",
                               "samples"))
    return out


def expired_suppliers(canteen_id: str, suppliers: Iterable[Row], today: date, plan: Plan) -> list[Finding]:
    """An active supplier whose licence expired before today."""
    out = []
    for s in suppliers:
        d = s["data"]
        expiry = date.fromisoformat(d["licence_expiry"])
        if d.get("active", True) and expiry < today:
            out.append(Finding("supplier_licence_expired", canteen_id, s["entry_id"], expiry,
                               plan.at(expiry + timedelta(days=1), time(0)),
                               f"供货商「{d['name']}」（{d['credit_code']}）的许可证 {d['licence_no']} 已于 {expiry} 过期",
                               "suppliers"))
    return out


def licence_state(expiry: str | None, on: date, warn_days: int) -> str:
    """`valid`, `expiring` (within warn_days of `on`), `expired` or `unknown` (no licence on record)."""
    if not expiry:
        return "unknown"
    left = (date.fromisoformat(expiry) - on).days
    return "expired" if left < 0 else "expiring" if left <= warn_days else "valid"
