from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import product

import pytest

from gateway.lifecycle import (
    FINAL,
    Decision,
    IllegalTransition,
    PartState,
    Status,
    aggregate,
    can_cancel,
    decide,
    transition,
    update_part,
    wants_smpp_receipt,
)

S = Status
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

LEGAL = {
    (S.ACCEPTED, S.SCHEDULED),
    (S.SCHEDULED, S.ACCEPTED),
    *((a, b) for a in (S.ACCEPTED, S.SCHEDULED) for b in (S.SUBMITTED, S.CANCELED)),
    *(
        (a, b)
        for a in (S.ACCEPTED, S.SCHEDULED)
        for b in (S.UNDELIVERED, S.EXPIRED, S.REJECTED, S.FAILED)
    ),
    (S.SUBMITTED, S.ENROUTE),
    *((a, b) for a in (S.SUBMITTED, S.ENROUTE) for b in FINAL - {S.CANCELED}),
}


@pytest.mark.parametrize(("current", "new"), sorted(LEGAL))
def test_legal_transitions(current: Status, new: Status) -> None:
    assert decide(current, new) is Decision.APPLY
    assert transition(current, new) is True


def test_everything_else_is_ignored_or_illegal() -> None:
    for current, new in product(Status, Status):
        if (current, new) in LEGAL:
            continue
        assert decide(current, new) is not Decision.APPLY, (current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.DELIVERED, S.ENROUTE),  # a late ENROUTE after DELIVRD changes nothing
        (S.DELIVERED, S.UNDELIVERED),  # nothing leaves a final status
        (S.CANCELED, S.SUBMITTED),
        (S.ENROUTE, S.SUBMITTED),  # late submit_sm_resp after the intermediate receipt
        (S.SUBMITTED, S.ACCEPTED),  # never resubmitted once an SMSC has it
        (S.ENROUTE, S.ENROUTE),  # repeated intermediate receipt
    ],
)
def test_ignored(current: Status, new: Status) -> None:
    assert decide(current, new) is Decision.IGNORE
    assert transition(current, new) is False


@pytest.mark.parametrize(
    ("current", "new"),
    [(S.ACCEPTED, S.DELIVERED), (S.ACCEPTED, S.ENROUTE), (S.SUBMITTED, S.CANCELED)],
)
def test_illegal(current: Status, new: Status) -> None:
    with pytest.raises(IllegalTransition):
        transition(current, new)


def test_nothing_leaves_a_final_status() -> None:
    for final, new in product(FINAL, Status):
        assert decide(final, new) is not Decision.APPLY


def test_can_cancel() -> None:
    assert {s for s in Status if can_cancel(s)} == {S.ACCEPTED, S.SCHEDULED}


def test_update_part_sets_milestones() -> None:
    p = PartState(seqnum=1)
    p1 = update_part(p, S.SUBMITTED, T0)
    assert p1 is not None and p1.submitted_at == T0
    p2 = update_part(p1, S.DELIVERED, T0 + timedelta(seconds=2), from_receipt=True)
    assert p2 is not None and p2.done_at == T0 + timedelta(seconds=2)
    # no intermediate receipt came: the final one sets handed_to_carrier_at too
    assert p2.handed_to_carrier_at == T0 + timedelta(seconds=2)
    assert update_part(p2, S.ENROUTE, T0 + timedelta(seconds=3)) is None


def _part(n: int, status: Status, at: int, *, enroute: int | None = None) -> PartState:
    t = T0 + timedelta(seconds=at)
    return PartState(
        seqnum=n,
        status=status,
        submitted_at=T0 + timedelta(seconds=n),
        handed_to_carrier_at=(T0 + timedelta(seconds=enroute)) if enroute is not None else None,
        done_at=t if status in FINAL else None,
    )


def test_aggregate_waits_for_every_part() -> None:
    one = [_part(1, S.SUBMITTED, 0)]
    progress = aggregate(2, one, S.ACCEPTED)
    assert progress.status is S.ACCEPTED
    assert progress.left_infrastructure_at is None  # part 2 has not left yet
    both = [*one, _part(2, S.SUBMITTED, 0)]
    progress = aggregate(2, both, S.ACCEPTED)
    assert progress.status is S.SUBMITTED
    assert progress.left_infrastructure_at == T0 + timedelta(seconds=2)  # the last part's time


def test_aggregate_delivered_when_all_parts_are() -> None:
    parts = [_part(1, S.DELIVERED, 10, enroute=5), _part(2, S.ENROUTE, 0, enroute=7)]
    progress = aggregate(2, parts, S.ACCEPTED)
    assert progress.status is S.ENROUTE
    assert progress.handed_to_carrier_at == T0 + timedelta(seconds=7)
    assert progress.delivered_at is None
    parts[1] = _part(2, S.DELIVERED, 12, enroute=7)
    progress = aggregate(2, parts, S.ACCEPTED)
    assert progress.status is S.DELIVERED
    assert progress.delivered_at == T0 + timedelta(seconds=12)


def test_aggregate_failed_part_decides_at_once() -> None:
    parts = [
        _part(1, S.DELIVERED, 10),
        PartState(seqnum=2, status=S.UNDELIVERED, error="0x0000000b", done_at=T0),
    ]
    progress = aggregate(3, parts, S.ACCEPTED)
    assert progress.status is S.UNDELIVERED
    assert progress.error == "0x0000000b"
    assert progress.delivered_at is None
    parts.append(PartState(seqnum=3, status=S.REJECTED, error="0x00000045"))
    assert aggregate(3, parts, S.ACCEPTED).status is S.REJECTED  # the most severe wins


def test_aggregate_scheduled_stays_scheduled() -> None:
    assert aggregate(1, [], S.SCHEDULED).status is S.SCHEDULED
    with pytest.raises(ValueError):
        aggregate(0, [], S.ACCEPTED)


def test_wants_smpp_receipt() -> None:
    assert wants_smpp_receipt(0x01, S.DELIVERED)
    assert wants_smpp_receipt(0x01, S.UNDELIVERED)
    assert not wants_smpp_receipt(0x00, S.DELIVERED)
    assert not wants_smpp_receipt(0x02, S.DELIVERED)
    assert wants_smpp_receipt(0x02, S.EXPIRED)
    assert not wants_smpp_receipt(0x01, S.ENROUTE)
    assert wants_smpp_receipt(0x11, S.ENROUTE)
    assert not wants_smpp_receipt(0x01, S.SUBMITTED)
    assert not wants_smpp_receipt(0x01, S.CANCELED)
