"""Message statuses of the contract and the only place that decides how they change.

Pure functions, no I/O. The store calls them inside its transactions; nobody else
writes a status.

Rules (see ``_NEXT`` for the whole table)
-----------------------------------------
* ``accepted`` and ``scheduled`` move freely between each other, and to ``submitted``
  (a due scheduled message is submitted directly, no detour through ``accepted``),
  ``canceled``, or a final failure (``failed``: no route / every attempt failed;
  ``expired``: validity passed before sending; ``rejected``: permanent submit_sm_resp
  error; ``undelivered``: a part of a multi-part message came back undelivered).
* ``submitted`` -> ``enroute`` -> a final status; ``submitted`` may jump straight to a
  final status (receipt without an intermediate one).
* Final statuses (delivered, undelivered, expired, rejected, failed, canceled) are
  never left.
* Retrying: a temporary error (throttled, queue full, timeout, lost connection) happens
  *before* submit_sm_resp ROK, so the message simply stays ``accepted`` (or ``scheduled``)
  and is retried; ``submitted`` never goes back to ``accepted``, because once an SMSC
  has acknowledged a submit_sm, sending it again would deliver it twice.

``decide(current, new)`` answers APPLY, IGNORE or ILLEGAL. IGNORE covers what the
outside world does all the time and must change nothing: the same status again, any
update of a final status (a late ENROUTE after DELIVRD), and an update behind the
current one (a late submit_sm_resp after the receipt). ILLEGAL is a move the table
does not have and that is not merely late (``accepted`` -> ``delivered``,
``submitted`` -> ``canceled``); ``transition()`` raises ``IllegalTransition`` for it.

Parts
-----
A message split into segments is one message with one part per segment (parts not yet
submitted are simply absent and count as ``accepted``). ``aggregate()`` derives the
message status and milestone times from the parts:

* ``delivered`` when every part is delivered;
* as soon as one part has a final status other than delivered, the message can no
  longer arrive whole, so it takes that status at once (what a user checking "did my
  text arrive?" expects); with several, the most severe wins, in the order
  failed > rejected > expired > undelivered (our fault before the network's), and its
  error is the message's error. Later receipts of the other parts still update the
  parts but not the message's status;
* otherwise the status of the least advanced part (all submitted -> ``submitted``,
  all at least enroute -> ``enroute``);
* a milestone time (``left_infrastructure_at``, ``handed_to_carrier_at``,
  ``delivered_at``) is set when the last part reaches it, to that part's time.

A final receipt sets a part's ``handed_to_carrier_at`` too when no intermediate
receipt came first (the carrier must have had it to report on it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any, cast

from gateway.frozen import record

__all__ = [
    "FINAL",
    "Decision",
    "Event",
    "IllegalTransition",
    "MessageProgress",
    "PartState",
    "Status",
    "aggregate",
    "can_cancel",
    "decide",
    "is_final",
    "transition",
    "update_part",
    "wants_smpp_receipt",
]


class Status(StrEnum):
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    SUBMITTED = "submitted"
    ENROUTE = "enroute"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELED = "canceled"


FINAL: frozenset[Status] = frozenset(
    {
        Status.DELIVERED,
        Status.UNDELIVERED,
        Status.EXPIRED,
        Status.REJECTED,
        Status.FAILED,
        Status.CANCELED,
    }
)
_FAILURES = (Status.UNDELIVERED, Status.EXPIRED, Status.REJECTED, Status.FAILED)

_NEXT: Mapping[Status, frozenset[Status]] = {
    Status.ACCEPTED: frozenset({Status.SCHEDULED, Status.SUBMITTED, Status.CANCELED, *_FAILURES}),
    Status.SCHEDULED: frozenset({Status.ACCEPTED, Status.SUBMITTED, Status.CANCELED, *_FAILURES}),
    Status.SUBMITTED: frozenset({Status.ENROUTE, Status.DELIVERED, *_FAILURES}),
    Status.ENROUTE: frozenset({Status.DELIVERED, *_FAILURES}),
    **{final: frozenset() for final in FINAL},
}

# How far along a status is; an update to a lower rank than the current one is late.
_RANK: Mapping[Status, int] = {
    Status.ACCEPTED: 0,
    Status.SCHEDULED: 0,
    Status.SUBMITTED: 1,
    Status.ENROUTE: 2,
    **{final: 3 for final in FINAL},
}

# Which failure describes a multi-part message when parts failed differently.
_SEVERITY: Mapping[Status, int] = {
    Status.FAILED: 4,
    Status.REJECTED: 3,
    Status.EXPIRED: 2,
    Status.UNDELIVERED: 1,
}


class Decision(Enum):
    APPLY = "apply"
    IGNORE = "ignore"
    ILLEGAL = "illegal"


class IllegalTransition(ValueError):
    """A status change the lifecycle does not allow (a bug in the caller, not a late update)."""

    def __init__(self, current: Status, new: Status) -> None:
        super().__init__(f"illegal status transition {current} -> {new}")
        self.current = current
        self.new = new

    def __reduce__(self) -> tuple[type[IllegalTransition], tuple[Status, Status]]:
        # Raised in the writer process and raised again in the gateway's (pickled).
        return type(self), (self.current, self.new)


def is_final(status: Status) -> bool:
    return status in FINAL


def can_cancel(status: Status) -> bool:
    """Only a message not yet submitted upstream can be canceled (contract: DELETE, cancel_sm)."""
    return Status.CANCELED in _NEXT[status]


def decide(current: Status, new: Status) -> Decision:
    if new in _NEXT[current]:
        return Decision.APPLY
    if new == current or current in FINAL or _RANK[new] < _RANK[current]:
        return Decision.IGNORE
    return Decision.ILLEGAL


def transition(current: Status, new: Status) -> bool:
    """True when the status changes, False when the update is to be ignored;
    raises ``IllegalTransition`` for a move the table does not have."""
    decision = decide(current, new)
    if decision is Decision.ILLEGAL:
        raise IllegalTransition(current, new)
    return decision is Decision.APPLY


@record
class Event:
    """One entry of a message's timeline."""

    status: Status
    at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)


@record
class PartState:
    """What the lifecycle needs to know about one segment."""

    seqnum: int
    status: Status = Status.ACCEPTED
    submitted_at: datetime | None = None
    handed_to_carrier_at: datetime | None = None
    done_at: datetime | None = None
    error: str | None = None


def update_part(
    part: PartState,
    new: Status,
    at: datetime,
    *,
    from_receipt: bool = False,
    error: str | None = None,
) -> PartState | None:
    """The part after ``new`` applies at ``at``, or None when the update is ignored.

    Raises ``IllegalTransition`` like ``transition()``.
    """
    if not transition(part.status, new):
        return None
    submitted_at, handed_to_carrier_at, done_at = (
        part.submitted_at,
        part.handed_to_carrier_at,
        part.done_at,
    )
    if new is Status.SUBMITTED:
        submitted_at = at
    elif new is Status.ENROUTE:
        handed_to_carrier_at = at
    elif new in FINAL:
        done_at = at
        if from_receipt and handed_to_carrier_at is None:
            handed_to_carrier_at = at
    # One construction, not a dataclasses.replace per field: this runs for every
    # submit_sm_resp and every receipt.
    return PartState(
        part.seqnum,
        new,
        submitted_at,
        handed_to_carrier_at,
        done_at,
        error if error is not None else part.error,
    )


@record
class MessageProgress:
    """A message's status and milestones as derived from its parts."""

    status: Status
    left_infrastructure_at: datetime | None
    handed_to_carrier_at: datetime | None
    delivered_at: datetime | None
    error: str | None


def _last(times: list[datetime | None]) -> datetime | None:
    # `in` and max() loop in C: this runs for every submit_sm_resp and receipt.
    if not times or None in times:
        return None
    return max(cast(list[datetime], times))


def aggregate(segments: int, parts: Sequence[PartState], unsent: Status) -> MessageProgress:
    """Derive the message's progress from its parts.

    ``segments`` is the number of parts the message has; parts missing from ``parts``
    have not been submitted yet. ``unsent`` is what the message is while not every
    part has left (its own ``accepted`` or ``scheduled``).
    """
    if segments < 1:
        raise ValueError("a message has at least one segment")
    # This runs for every submit_sm_resp and receipt, hence the shortcuts: most
    # messages have one part, and a PartState is only built for a missing one
    # (building one per part to throw it away cost more than all the rest).
    every: Sequence[PartState]
    if segments == 1 and len(parts) == 1 and parts[0].seqnum == 1:
        every = parts
    else:
        by_seq = {p.seqnum: p for p in parts}
        every = [by_seq.get(n) or PartState(seqnum=n) for n in range(1, segments + 1)]
    failed = [p for p in every if p.status in _SEVERITY]
    if failed:
        worst = (
            failed[0]
            if len(failed) == 1
            else max(failed, key=lambda p: (_SEVERITY[p.status], -p.seqnum))
        )
        status, error = worst.status, worst.error
    elif all(p.status is Status.DELIVERED for p in every):
        status, error = Status.DELIVERED, None
    else:
        least = min([_RANK[p.status] for p in every])
        status = {0: unsent, 1: Status.SUBMITTED}.get(least, Status.ENROUTE)
        error = None
    delivered = status is Status.DELIVERED
    return MessageProgress(
        status=status,
        left_infrastructure_at=_last([p.submitted_at for p in every]),
        handed_to_carrier_at=_last([p.handed_to_carrier_at for p in every]),
        delivered_at=_last([p.done_at for p in every]) if delivered else None,
        error=error,
    )


def wants_smpp_receipt(registered_delivery: int, status: Status) -> bool:
    """Whether an ESME asked for a deliver_sm on this status (SMPP 3.4 section 5.2.17).

    Bits 0-1: 01 a receipt on a final outcome, 10 only on failure; bit 4 (0x10):
    intermediate notifications, which we send for ``enroute``.
    """
    if status is Status.ENROUTE:
        return bool(registered_delivery & 0x10)
    if status not in FINAL or status is Status.CANCELED:
        return False
    receipt = registered_delivery & 0x03
    return receipt == 1 or (receipt == 2 and status is not Status.DELIVERED)
