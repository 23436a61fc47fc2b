"""The rectification workflow state machine (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cloud_receiver.workflow import rectify
from cloud_receiver.workflow.rectify import Action, IllegalTransition, InvalidInput, NotAllowed, WorkflowStatus

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=1)
PHOTO = "a" * 64


def _apply(action, status="待整改", deadline=LATER, role="canteen", **kw):
    return rectify.apply(action, status=status, deadline=deadline, actor="u1", role=role, now=NOW, **kw)


def test_full_cycle_submit_reject_resubmit_approve():
    """A canteen submits, the regulator rejects with a new deadline, the canteen resubmits, it is approved."""
    o1 = _apply(Action.SUBMIT, note="已清理", photo_sha256=PHOTO)
    assert o1.status == "已整改"
    assert [(t.from_status, t.to_status, t.role, t.photo_sha256) for t in o1.transitions] == [
        ("待整改", "已整改", "canteen", PHOTO)]
    new_deadline = NOW + timedelta(days=3)
    o2 = _apply(Action.REJECT, status=o1.status, role="regulator", note="照片不清晰", new_deadline=new_deadline)
    assert o2.status == "待整改" and o2.deadline == new_deadline
    assert [(t.from_status, t.to_status) for t in o2.transitions] == [("已整改", "驳回"), ("驳回", "待整改")]
    assert o2.transitions[0].note == "照片不清晰" and o2.transitions[0].at == NOW
    o3 = _apply(Action.SUBMIT, status=o2.status, deadline=o2.deadline, note="重新清理", photo_sha256=PHOTO)
    o4 = _apply(Action.APPROVE, status=o3.status, role="regulator", note="合格")
    assert o4.status == "复核通过" and o4.transitions[0].actor == "u1"


@pytest.mark.parametrize(("action", "role", "status"), [
    (Action.APPROVE, "canteen", "已整改"),
    (Action.REJECT, "canteen", "已整改"),
    (Action.SET_DEADLINE, "canteen", "待整改"),
    (Action.SUBMIT, "regulator", "待整改"),
    (Action.SUBMIT, "public", "待整改"),
    (Action.APPROVE, "public", "已整改"),
])
def test_wrong_role_refused(action, role, status):
    """Each action is refused for roles that may not perform it."""
    with pytest.raises(NotAllowed):
        _apply(action, status=status, role=role, note="x", photo_sha256=PHOTO, new_deadline=LATER)


@pytest.mark.parametrize(("action", "role", "status"), [
    (Action.SUBMIT, "canteen", "已整改"),
    (Action.SUBMIT, "canteen", "复核通过"),
    (Action.APPROVE, "regulator", "待整改"),
    (Action.APPROVE, "regulator", "复核通过"),
    (Action.REJECT, "regulator", "待整改"),
    (Action.SET_DEADLINE, "regulator", "已整改"),
    (Action.SET_DEADLINE, "admin", "复核通过"),
])
def test_illegal_transitions_refused(action, role, status):
    """Actions that do not fit the current status are refused."""
    with pytest.raises(IllegalTransition):
        _apply(action, status=status, role=role, note="x", photo_sha256=PHOTO, new_deadline=LATER)


@pytest.mark.parametrize("kw", [
    {"note": "", "photo_sha256": PHOTO},
    {"note": "done", "photo_sha256": None},
    {"note": "x" * 1001, "photo_sha256": PHOTO},
])
def test_submit_needs_note_and_photo(kw):
    """A submission without a note or photo, or with an over-long note, is invalid input."""
    with pytest.raises(InvalidInput):
        _apply(Action.SUBMIT, **kw)


@pytest.mark.parametrize("deadline", [None, NOW - timedelta(minutes=1), NOW, datetime(2030, 1, 1)])
def test_reject_needs_future_aware_deadline(deadline):
    """A rejection needs a timezone-aware deadline in the future."""
    with pytest.raises(InvalidInput):
        _apply(Action.REJECT, status="已整改", role="regulator", note="再改", new_deadline=deadline)


def test_overdue_is_computed_not_stored():
    """待整改 past its deadline reads as 逾期; other statuses never do."""
    past = NOW - timedelta(seconds=1)
    assert rectify.effective_status("待整改", past, NOW) is WorkflowStatus.OVERDUE
    assert rectify.effective_status("待整改", LATER, NOW) is WorkflowStatus.PENDING
    assert rectify.effective_status("待整改", None, NOW) is WorkflowStatus.PENDING
    assert rectify.effective_status("已整改", past, NOW) is WorkflowStatus.SUBMITTED
    assert rectify.effective_status("复核通过", past, NOW) is WorkflowStatus.APPROVED


def test_late_submission_records_overdue_origin():
    """An overdue alert may still be rectified; the transition records that it was 逾期."""
    o = _apply(Action.SUBMIT, deadline=NOW - timedelta(hours=1), note="迟交", photo_sha256=PHOTO)
    assert o.status == "已整改"
    assert o.transitions[0].from_status == "逾期"


def test_set_deadline_reopens_overdue():
    """A regulator extending the deadline of an overdue alert makes it 待整改 again."""
    o = _apply(Action.SET_DEADLINE, deadline=NOW - timedelta(hours=1), role="regulator", new_deadline=LATER)
    assert (o.status, o.deadline) == ("待整改", LATER)
    assert rectify.effective_status(o.status, o.deadline, NOW) is WorkflowStatus.PENDING
    assert o.transitions[0].from_status == "逾期"


def test_effective_deadline_default():
    """Without a deadline set, the default is started_at plus the configured hours."""
    assert rectify.effective_deadline(None, NOW, 24) == NOW + timedelta(hours=24)
    assert rectify.effective_deadline(LATER, NOW, 24) == LATER
    assert rectify.effective_deadline(None, NOW, None) is None


def test_unknown_action_is_invalid():
    """An unknown action name is invalid input, not a crash."""
    with pytest.raises(InvalidInput):
        _apply("delete")
