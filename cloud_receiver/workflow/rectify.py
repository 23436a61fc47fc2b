"""The rectification workflow of an alert (预警 → 整改 → 复核) as a pure state machine.

Stored statuses are 待整改, 已整改 and 复核通过. 逾期 is never stored: it is what 待整改 becomes
when its deadline has passed, computed at read time (`effective_status`), so no timer has to
run for it. 驳回 is recorded in the history: a rejection is written as two transitions,
已整改 → 驳回 (the reviewer's decision and note) and 驳回 → 待整改 (reopened with a new deadline),
so the alert is back in the canteen's hands while the history keeps the rejection.

Who may do what (scope checks — which canteen, which jurisdiction — belong to the API):
- canteen: submit a rectification (note + photo) while 待整改 or 逾期;
- regulator, admin: approve or reject a submitted rectification, set a deadline while open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class WorkflowStatus(StrEnum):
    PENDING = "待整改"
    SUBMITTED = "已整改"
    APPROVED = "复核通过"
    REJECTED = "驳回"
    OVERDUE = "逾期"


class Action(StrEnum):
    SUBMIT = "submit"
    APPROVE = "approve"
    REJECT = "reject"
    SET_DEADLINE = "set_deadline"


STATUSES = tuple(s.value for s in WorkflowStatus)
REVIEWERS = frozenset({"regulator", "admin"})
ALLOWED_ROLES: dict[Action, frozenset[str]] = {
    Action.SUBMIT: frozenset({"canteen"}),
    Action.APPROVE: REVIEWERS,
    Action.REJECT: REVIEWERS,
    Action.SET_DEADLINE: REVIEWERS,
}
OPEN = frozenset({WorkflowStatus.PENDING, WorkflowStatus.OVERDUE})
NOTE_MAX = 1000


class WorkflowError(Exception):
    """Base of workflow refusals; `code` is the API error code."""

    code = "workflow_error"


class NotAllowed(WorkflowError):
    """This role may not perform this action."""

    code = "forbidden"


class IllegalTransition(WorkflowError):
    """The action does not apply to the alert's current status."""

    code = "illegal_transition"


class InvalidInput(WorkflowError):
    """Missing or malformed note, photo or deadline."""

    code = "invalid_input"


@dataclass(frozen=True, slots=True)
class Transition:
    from_status: str
    to_status: str
    actor: str
    role: str
    note: str
    photo_sha256: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """New stored status and deadline of the alert, and the transitions to record."""

    status: str
    deadline: datetime | None
    transitions: tuple[Transition, ...]


def effective_deadline(deadline: datetime | None, started_at: datetime | None,
                       default_hours: float | None) -> datetime | None:
    """The deadline that applies: the one set on the alert, else `started_at + default_hours`."""
    if deadline is not None:
        return deadline
    if started_at is None or default_hours is None:
        return None
    return started_at + timedelta(hours=default_hours)


def effective_status(status: str, deadline: datetime | None, now: datetime) -> WorkflowStatus:
    """The status a reader sees: 待整改 past its deadline reads as 逾期."""
    st = WorkflowStatus(status)
    if st is WorkflowStatus.PENDING and deadline is not None and now > deadline:
        return WorkflowStatus.OVERDUE
    return st


def apply(action: Action | str, *, status: str, deadline: datetime | None, actor: str, role: str,
          now: datetime, note: str = "", photo_sha256: str | None = None,
          new_deadline: datetime | None = None) -> Outcome:
    """Apply one workflow action; raises NotAllowed, IllegalTransition or InvalidInput.

    `deadline` is the effective deadline (see `effective_deadline`); `now` must be timezone-aware
    like the deadlines.
    """
    try:
        act = Action(action)
    except ValueError as err:
        raise InvalidInput(f"unknown action {action!r}") from err
    if role not in ALLOWED_ROLES[act]:
        raise NotAllowed(f"role {role!r} may not {act.value}; allowed: {', '.join(sorted(ALLOWED_ROLES[act]))}")
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise InvalidInput(f"note is {len(note)} characters, at most {NOTE_MAX} allowed")
    current = effective_status(status, deadline, now)

    def step(frm: WorkflowStatus, to: WorkflowStatus, text: str = note, photo: str | None = None) -> Transition:
        return Transition(frm.value, to.value, actor, role, text, photo, now)

    if act is Action.SUBMIT:
        if current not in OPEN:
            raise IllegalTransition(f"cannot submit a rectification while the alert is {current.value}")
        if not note:
            raise InvalidInput("a rectification needs a note describing what was done")
        if not photo_sha256:
            raise InvalidInput("a rectification needs a photo")
        t = step(current, WorkflowStatus.SUBMITTED, photo=photo_sha256)
        return Outcome(WorkflowStatus.SUBMITTED.value, deadline, (t,))

    if act is Action.APPROVE:
        if current is not WorkflowStatus.SUBMITTED:
            raise IllegalTransition(f"only a submitted rectification (已整改) can be approved, not {current.value}")
        return Outcome(WorkflowStatus.APPROVED.value, deadline, (step(current, WorkflowStatus.APPROVED),))

    _check_new_deadline(new_deadline, now)
    if act is Action.REJECT:
        if current is not WorkflowStatus.SUBMITTED:
            raise IllegalTransition(f"only a submitted rectification (已整改) can be rejected, not {current.value}")
        if not note:
            raise InvalidInput("a rejection needs a note saying what is still wrong")
        assert new_deadline is not None
        reopen = f"重新整改，期限 {new_deadline.isoformat()}"
        return Outcome(WorkflowStatus.PENDING.value, new_deadline, (
            step(WorkflowStatus.SUBMITTED, WorkflowStatus.REJECTED),
            step(WorkflowStatus.REJECTED, WorkflowStatus.PENDING, text=reopen),
        ))

    # SET_DEADLINE
    if current not in OPEN:
        raise IllegalTransition(f"a deadline can only be set while the alert is open, not {current.value}")
    return Outcome(WorkflowStatus.PENDING.value, new_deadline, (step(current, WorkflowStatus.PENDING),))


def _check_new_deadline(new_deadline: datetime | None, now: datetime) -> None:
    if new_deadline is None:
        raise InvalidInput("a new deadline is required")
    if new_deadline.tzinfo is None:
        raise InvalidInput("the deadline needs a time zone, e.g. 2024-05-01T18:00:00+08:00")
    if new_deadline <= now:
        raise InvalidInput(f"the deadline {new_deadline.isoformat()} is not in the future")
