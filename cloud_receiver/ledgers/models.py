"""What an entry of each ledger holds, as pydantic models: one definition for the checks (400 naming the
field: `weight_g: Input should be greater than or equal to 125`) and for the OpenAPI document.

Field by field rules live in the models. Rules no JSON schema can state — a day in the future, a
统一社会信用代码 whose check character is wrong, a sample kept less than 48 h, a staff member with a
fever marked fit to work — are `problems(...)`, answered 422 naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, create_model

SAMPLE_MIN_WEIGHT_G = 125  # 食品留样: at least 125 g of each dish
SAMPLE_MIN_HOURS = 48  # … kept at least 48 hours
FEVER_C = 37.3  # from this temperature on, a worker has a fever and may not work

Name = Annotated[str, Field(min_length=1, max_length=100)]
Short = Annotated[str, Field(max_length=100)]
Note = Annotated[str, Field(max_length=500)]
Number = Annotated[str, Field(min_length=1, max_length=64)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of a photo uploaded with "
                                                                    "POST /canteens/{id}/ledger-photos.")]
Photos = Annotated[list[Sha256], Field(max_length=20)]
EntryRef = Annotated[str, Field(pattern=r"^[0-9A-Za-z_-]{1,64}$", description="Id of an entry of this canteen.")]
Meal = Literal["早", "午", "晚"]


def _integral(value: object) -> object:
    """53.0 is an integer in JSON Schema (and so in the OpenAPI document): accept it as 53, also when strict."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def count(lo: int, hi: int) -> Any:
    """An integer from `lo` to `hi` (an integral float such as 53.0 included)."""
    return Annotated[int, Field(ge=lo, le=hi), BeforeValidator(_integral)]
MEALS: tuple[str, ...] = ("早", "午", "晚")
# 统一社会信用代码 (GB 32100-2015): 18 characters of this alphabet, the last a check character
CREDIT_CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
CreditCode = Annotated[str, Field(pattern=r"^[0-9A-HJ-NPQRTUWXY]{18}$",
                                  description="统一社会信用代码: 18 characters, digits and capitals without I O S V Z.")]


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Supplier(Entry):
    """供货商: who the canteen buys from, with its licence."""

    name: Name
    credit_code: CreditCode
    licence_no: Number = Field(description="食品经营许可证 / 食品生产许可证 number.")
    licence_expiry: date
    licence_photo_sha256: Sha256 | None = None
    address: Short = ""
    contact: Short = ""
    phone: Annotated[str, Field(max_length=32)] = ""
    active: bool = True


class PurchaseItem(Entry):
    name: Name
    quantity: Annotated[float, Field(gt=0, le=1_000_000)]
    unit: Annotated[str, Field(min_length=1, max_length=16, description="e.g. 千克, 箱, 袋.")]
    batch: Short = ""
    production_date: date | None = None
    shelf_life_days: count(0, 3650) | None = None


class Purchase(Entry):
    """原料索证索票: one delivery, its items, and photos of the 检验合格证明 and the 票据."""

    day: date
    supplier_id: EntryRef
    items: Annotated[list[PurchaseItem], Field(min_length=1, max_length=200)]
    certificate_photo_sha256s: Photos = []
    invoice_photo_sha256s: Photos = []
    note: Note = ""


class Staff(Entry):
    """从业人员 with the 健康证."""

    name: Name
    position: Short = ""
    health_cert_no: Number
    health_cert_issued: date
    health_cert_expiry: date
    health_cert_photo_sha256: Sha256 | None = None
    active: bool = True


class ShiftCheck(Entry):
    """One person's 晨检 within a shift (`MorningCheckBatch`)."""

    staff_id: EntryRef
    temperature_c: Annotated[float, Field(ge=34, le=43)]
    hand_wound: bool = Field(description="手部外伤 (cuts, burns, infections on the hands).")
    diarrhea: bool
    fever: bool
    cough: bool
    fit_to_work: bool
    note: Note = ""


class MorningCheck(ShiftCheck):
    """每日晨检 of one person on one day."""

    day: date
    checked_by: Short = ""


class MorningCheckBatch(Entry):
    """A whole shift's 晨检 in one request: one entry per person."""

    day: date
    checked_by: Short = ""
    checks: Annotated[list[ShiftCheck], Field(min_length=1, max_length=500)]

    def entries(self) -> list[MorningCheck]:
        return [MorningCheck(day=self.day, checked_by=self.checked_by, **c.model_dump()) for c in self.checks]


class Disinfection(Entry):
    """清洗消毒 of tableware or tools."""

    day: date
    target: Name = Field(description="消毒对象, e.g. 餐具, 砧板.")
    method: Literal["热力", "化学", "紫外线", "其他"]
    agent: Short = Field("", description="消毒剂 and its concentration, for chemical disinfection.")
    duration_min: count(1, 1440)
    operator: Name
    photo_sha256s: Photos = []
    note: Note = ""


class Waste(Entry):
    """厨余废弃物 handed to a licensed collector."""

    day: date
    category: Literal["餐厨垃圾", "废弃油脂", "其他"] = "餐厨垃圾"
    quantity_kg: Annotated[float, Field(gt=0, le=100_000)]
    collector: Name = Field(description="收运人.")
    company: Name = Field(description="收运单位.")
    photo_sha256s: Photos = []
    note: Note = ""


class Sample(Entry):
    """食品留样: at least 125 g of a dish of a meal, kept at least 48 h."""

    day: date
    meal: Meal
    dish: Name
    weight_g: Annotated[float, Field(ge=SAMPLE_MIN_WEIGHT_G, le=10_000)]
    kept_from: AwareDatetime
    kept_until: AwareDatetime = Field(description="Planned end of keeping: at least 48 h after kept_from.")
    kept_by: Name
    photo_sha256: Sha256 | None = None
    discarded_at: AwareDatetime | None = Field(None, description="When the sample was actually thrown away.")
    discarded_by: Short = ""
    note: Note = ""


class Gathering(Entry):
    """聚餐登记: a meal for a gathering, which needs its samples like any served meal."""

    day: date
    meal: Meal
    occasion: Name
    headcount: count(1, 100_000)
    organizer: Name
    dishes: Annotated[list[Name], Field(max_length=100)] = []
    reported_to: Short = Field("", description="报备单位.")
    note: Note = ""


class Additive(Entry):
    """添加剂备案: a food additive used, how much and in what."""

    day: date
    name: Name
    purpose: Short = ""
    dish: Short = ""
    amount_g: Annotated[float, Field(gt=0, le=100_000)]
    operator: Name
    supplier_id: EntryRef | None = None
    note: Note = ""


class PhotoEntry(Entry):
    """图片台帐: photos of the kitchen kept as a record."""

    day: date
    category: Short = ""
    caption: Note = ""
    photo_sha256s: Annotated[list[Sha256], Field(min_length=1, max_length=20)]


@dataclass(frozen=True)
class Kind:
    code: str  # as in the URL
    name: str  # Chinese, as shown to people
    model: type[Entry]
    subject: str | None = None  # the field that says what the entry is about (indexed as `subject`)
    refs: dict[str, str] = field(default_factory=dict)  # field -> the kind of entry it names


KINDS: dict[str, Kind] = {k.code: k for k in (
    Kind("suppliers", "供货商", Supplier),
    Kind("purchases", "原料索证索票", Purchase, "supplier_id", {"supplier_id": "suppliers"}),
    Kind("staff", "从业人员", Staff),
    Kind("morning_checks", "每日晨检", MorningCheck, "staff_id", {"staff_id": "staff"}),
    Kind("disinfection", "清洗消毒", Disinfection),
    Kind("waste", "厨余废弃物", Waste),
    Kind("samples", "食品留样", Sample, "meal"),
    Kind("gatherings", "聚餐登记", Gathering, "meal"),
    Kind("additives", "添加剂备案", Additive, None, {"supplier_id": "suppliers"}),
    Kind("photos", "图片台帐", PhotoEntry),
)}


def credit_code_problem(code: str) -> str | None:
    """What is wrong with a 统一社会信用代码, or None (the check character per GB 32100-2015)."""
    if len(code) != 18 or any(c not in CREDIT_CODE_CHARS for c in code):
        return "must be 18 characters: digits and capital letters without I, O, S, V, Z"
    total = sum(CREDIT_CODE_CHARS.index(c) * w for c, w in zip(code[:17], _CREDIT_WEIGHTS, strict=True))
    check = CREDIT_CODE_CHARS[(31 - total % 31) % 31]
    return None if code[17] == check else f"check character is {code[17]!r}, should be {check!r} (a typing error?)"


def problems(entry: Entry, today: date) -> Iterator[tuple[str, str]]:
    """(field, what is wrong) for each rule of `entry` that its schema cannot state."""
    for name, value in entry:
        if isinstance(value, datetime):
            try:
                value.astimezone(UTC)
            except (OverflowError, ValueError):
                yield name, "outside the supported range (years 1 to 9999 in UTC)"
                return
    day = getattr(entry, "day", None)
    if isinstance(day, date) and day > today:
        yield "day", f"{day} is in the future"
    if isinstance(entry, Supplier) and (problem := credit_code_problem(entry.credit_code)):
        yield "credit_code", problem
    if isinstance(entry, Staff) and entry.health_cert_expiry <= entry.health_cert_issued:
        yield "health_cert_expiry", f"{entry.health_cert_expiry} is not after health_cert_issued"
    if isinstance(entry, Staff) and entry.health_cert_issued > today:
        yield "health_cert_issued", f"{entry.health_cert_issued} is in the future"
    if isinstance(entry, ShiftCheck) and entry.fit_to_work and (reason := unfit_reason(entry)):
        yield "fit_to_work", f"cannot be true: {reason} (不得上岗)"
    if isinstance(entry, Sample):
        if entry.kept_until - entry.kept_from < timedelta(hours=SAMPLE_MIN_HOURS):
            yield "kept_until", f"must be at least {SAMPLE_MIN_HOURS} h after kept_from"
        if entry.discarded_at is not None and entry.discarded_at < entry.kept_from:
            yield "discarded_at", "is before kept_from"
    if isinstance(entry, Purchase):
        for i, item in enumerate(entry.items):
            if item.production_date is not None and item.production_date > entry.day:
                yield f"items.{i}.production_date", f"{item.production_date} is after the delivery day {entry.day}"


def unfit_reason(check: ShiftCheck) -> str | None:
    """Why a checked person may not work that day, or None."""
    if check.temperature_c >= FEVER_C:
        return f"temperature {check.temperature_c} ℃ is {FEVER_C} ℃ or more"
    signs = [n for n in ("hand_wound", "diarrhea", "fever", "cough") if getattr(check, n)]
    return f"{', '.join(signs)} reported" if signs else None


def photo_refs(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field path, sha256) of every photo an entry's data names."""
    for key, value in data.items():
        if key.endswith("_sha256") and isinstance(value, str):
            yield key, value
        elif key.endswith("_sha256s") and isinstance(value, list):
            yield from ((f"{key}.{i}", v) for i, v in enumerate(value) if isinstance(v, str))


Reason = Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S", description="Why the entry is corrected.")]


class CommentBody(Entry):
    text: Annotated[str, Field(min_length=1, max_length=1000, pattern=r"\S")]


def _correction(kind: Kind) -> type[Entry]:
    return create_model(f"{kind.model.__name__}Correction", __base__=Entry, reason=(Reason, ...),
                        data=(kind.model, ...))


CORRECTIONS: dict[str, type[Entry]] = {code: _correction(k) for code, k in KINDS.items()}
