"""The ledger rules as pure functions on tiny inputs, and the checks of the ledgers' models."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from cloud_receiver.config import LedgersConfig
from cloud_receiver.ledgers import rules
from cloud_receiver.ledgers.models import MorningCheck, Sample, Staff, Supplier, credit_code_problem, problems
from cloud_receiver.ledgers.rules import Plan

pytestmark = pytest.mark.unit

CST = timezone(timedelta(hours=8))
MONDAY = date(2024, 5, 6)
PLAN = Plan.of(LedgersConfig(holidays=[date(2024, 5, 1)], canteen_meals={"C9": ["早", "午", "晚"]}))


def at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=CST)


def staff(entry_id: str, expiry: str, *, active: bool = True, day: str = "2024-01-01", name: str = "张三") -> dict:
    return {"entry_id": entry_id, "day": day, "subject": None, "created_at": "2024-01-01T00:00:00.000Z",
            "data": {"name": name, "health_cert_no": f"HC-{entry_id}", "health_cert_expiry": expiry, "active": active}}


def check(staff_id: str, day: date, created: str = "2024-05-06T00:30:00.000Z") -> dict:
    return {"entry_id": f"chk-{staff_id}", "day": day.isoformat(), "subject": staff_id, "created_at": created,
            "data": {"staff_id": staff_id, "fit_to_work": True}}


def sample(meal: str, day: date, kept_from: datetime, hours: float, discarded_after: float | None = None) -> dict:
    data = {"meal": meal, "dish": "番茄炒蛋", "kept_from": kept_from.isoformat(),
            "kept_until": (kept_from + timedelta(hours=hours)).isoformat(), "discarded_at": None}
    if discarded_after is not None:
        data["discarded_at"] = (kept_from + timedelta(hours=discarded_after)).isoformat()
    return {"entry_id": f"s-{meal}", "day": day.isoformat(), "subject": meal, "created_at": "x", "data": data}


@pytest.mark.parametrize(("expiry", "types"), [
    ("2024-05-05", ["health_cert_expired"]),
    ("2024-05-06", ["health_cert_expiring"]),  # valid through its last day
    ("2024-06-05", ["health_cert_expiring"]),  # 30 days ahead
    ("2024-06-06", []),
])
def test_health_cert_on_a_morning_check(expiry, types):
    """A checked person's 健康证: expired before the day, expiring within 30 days, or fine."""
    found = rules.health_certs("C1", [check("s1", MONDAY)], {"s1": staff("s1", expiry)}, warn_days=30)
    assert [f.type for f in found] == types
    if types == ["health_cert_expired"]:
        assert found[0].day == MONDAY and found[0].subject == "s1" and "已于 2024-05-05 过期" in found[0].detail
        assert found[0].level == "warning"
    if types == ["health_cert_expiring"]:
        assert found[0].day == date.fromisoformat(expiry) and found[0].level == "info"


def test_health_cert_of_unknown_staff_is_ignored():
    """A check naming no known staff entry raises nothing (the store refuses such checks anyway)."""
    assert rules.health_certs("C1", [check("ghost", MONDAY)], {}, warn_days=30) == []


def test_finding_ids_are_stable_and_distinct():
    """The alert id depends on (rule, canteen, subject, day) only, fits the API's id pattern, and differs per day."""
    a = rules.health_certs("C1", [check("s1", MONDAY)], {"s1": staff("s1", "2024-01-01")}, 30)[0]
    b = rules.health_certs("C1", [check("s1", MONDAY, "2024-05-06T05:00:00Z")], {"s1": staff("s1", "2024-01-01")}, 30)[0]
    c = rules.health_certs("C1", [check("s1", MONDAY + timedelta(days=1))], {"s1": staff("s1", "2024-01-01")}, 30)[0]
    assert a.alert_id == b.alert_id != c.alert_id
    assert a.alert_id.startswith("ledger-") and len(a.alert_id) <= 64


@pytest.mark.parametrize(("day", "now", "checks", "people", "expected"), [
    (MONDAY, at(MONDAY, 9, 1), 0, [staff("s1", "2099-01-01")], True),
    (MONDAY, at(MONDAY, 8, 59), 0, [staff("s1", "2099-01-01")], False),  # not due yet
    (MONDAY, at(MONDAY, 10), 1, [staff("s1", "2099-01-01")], False),  # checked
    (MONDAY, at(MONDAY, 10), 0, [staff("s1", "2099-01-01", active=False)], False),  # nobody active
    (MONDAY, at(MONDAY, 10), 0, [staff("s1", "2099-01-01", day="2024-05-07")], False),  # registered later
    (date(2024, 5, 4), at(date(2024, 5, 4), 10), 0, [staff("s1", "2099-01-01")], False),  # Saturday
    (date(2024, 5, 1), at(date(2024, 5, 1), 10), 0, [staff("s1", "2099-01-01")], False),  # holiday
])
def test_missing_morning_check(day, now, checks, people, expected):
    """No 晨检 by 09:00 on a school day, for a canteen with active staff, is a finding; otherwise none."""
    found = rules.missing_morning_check("C1", day, now, PLAN, people, checks)
    assert (found is not None) == expected
    if found:
        assert found.type == "morning_check_missing" and found.at == at(day, 9) and "在岗从业人员 1 人" in found.detail


def test_missing_samples_by_plan_and_gatherings():
    """午 is served on school days by default; a gathering adds its meal; each is due at its own time."""
    gathering = {"entry_id": "g1", "day": "2024-05-06", "subject": "晚", "created_at": "x", "data": {}}
    found = rules.missing_samples("C1", MONDAY, at(MONDAY, 21), PLAN, [], [gathering])
    assert [(f.type, f.subject) for f in found] == [("sample_missing", "午"), ("sample_missing", "晚")]
    assert rules.missing_samples("C1", MONDAY, at(MONDAY, 15), PLAN, [], [gathering])[0].subject == "午"
    kept = sample("午", MONDAY, at(MONDAY, 12), 48)
    assert rules.missing_samples("C1", MONDAY, at(MONDAY, 15), PLAN, [kept], []) == []
    assert rules.missing_samples("C1", date(2024, 5, 4), at(date(2024, 5, 4), 23), PLAN, [], []) == []  # Saturday


def test_canteen_meals_override_the_default():
    """A canteen configured to serve 早, 午 and 晚 needs three samples."""
    found = rules.missing_samples("C9", MONDAY, at(MONDAY, 23), PLAN, [], [])
    assert [f.subject for f in found] == ["早", "午", "晚"]


@pytest.mark.parametrize(("hours", "discarded", "short"), [(48, None, False), (72, 47.5, True), (72, 48, False)])
def test_short_samples(hours, discarded, short):
    """A sample thrown away before 48 h is a finding; one kept 48 h or more is not."""
    found = rules.short_samples("C1", [sample("午", MONDAY, at(MONDAY, 12), hours, discarded)])
    assert bool(found) == short
    if short:
        assert found[0].type == "sample_too_short" and "47.5 小时" in found[0].detail


def test_expired_suppliers():
    """An active supplier whose licence expired before today; an inactive one raises nothing."""
    row = {"entry_id": "sup1", "day": "2024-01-01", "subject": None, "created_at": "x",
           "data": {"name": "宁夏粮油", "credit_code": "91640500MA76A1B2CE", "licence_no": "JY1", "licence_expiry":
                    "2024-05-05", "active": True}}
    found = rules.expired_suppliers("C1", [row], MONDAY, PLAN)
    assert [(f.type, f.day, f.at) for f in found] == [("supplier_licence_expired", date(2024, 5, 5), at(MONDAY, 0))]
    assert rules.expired_suppliers("C1", [row], date(2024, 5, 5), PLAN) == []
    assert rules.expired_suppliers("C1", [{**row, "data": {**row["data"], "active": False}}], MONDAY, PLAN) == []


@pytest.mark.parametrize(("expiry", "state"), [(None, "unknown"), ("2024-05-05", "expired"),
                                               ("2024-05-20", "expiring"), ("2025-01-01", "valid")])
def test_licence_state(expiry, state):
    """A licence's state on a day: expired, expiring within the warning days, valid, or unknown."""
    assert rules.licence_state(expiry, MONDAY, 30) == state


@pytest.mark.parametrize(("code", "ok"), [("91330100716105852F", True), ("9144030071526726XG", True),
                                          ("91640500MA76A1B2CF", False), ("91640500MA76A1B2C", False)])
def test_credit_code_check_character(code, ok):
    """统一社会信用代码: real codes pass, a wrong check character or length does not."""
    assert (credit_code_problem(code) is None) == ok


def _problems(entry, today=MONDAY):
    return dict(problems(entry, today))


def test_rules_no_schema_states():
    """Cross-field rules name their field: short keeping, fever marked fit, a future day, dates out of order."""
    t = datetime(2024, 5, 6, 12, tzinfo=CST)
    short = Sample(day=MONDAY, meal="午", dish="米饭", weight_g=150, kept_from=t, kept_until=t + timedelta(hours=47),
                   kept_by="李四")
    assert "kept_until" in _problems(short)
    fever = MorningCheck(day=MONDAY, staff_id="s1", temperature_c=37.5, hand_wound=False, diarrhea=False, fever=False,
                         cough=False, fit_to_work=True)
    assert "不得上岗" in _problems(fever)["fit_to_work"]
    assert "day" in _problems(fever.model_copy(update={"temperature_c": 36.4}), today=MONDAY - timedelta(days=1))
    person = Staff(name="张三", health_cert_no="1", health_cert_issued=MONDAY, health_cert_expiry=MONDAY)
    assert "health_cert_expiry" in _problems(person)
    supplier = Supplier(name="某公司", credit_code="91640500MA76A1B2CF", licence_no="JY1", licence_expiry=MONDAY)
    assert "credit_code" in _problems(supplier)


def test_sample_weight_is_a_schema_rule():
    """Less than 125 g of a sample is refused by the model itself, naming weight_g."""
    with pytest.raises(ValidationError) as err:
        Sample(day=MONDAY, meal="午", dish="米饭", weight_g=100, kept_from=at(MONDAY, 12),
               kept_until=at(MONDAY, 12) + timedelta(hours=48), kept_by="李四")
    assert err.value.errors()[0]["loc"] == ("weight_g",)
