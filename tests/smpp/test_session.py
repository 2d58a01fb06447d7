"""The sans-IO session: bind, window, sequence numbers, answers to bad input, timers."""

from __future__ import annotations

import pytest

import smpp
from smpp.constants import CommandId, CommandStatus
from smpp.errors import (
    AlreadyBound,
    InvalidBindStatus,
    InvalidCommandId,
    InvalidCommandLength,
    LocalProtocolError,
    MalformedPdu,
)
from smpp.session import (
    TRANSITIONS,
    EnquireLinkDue,
    InactivityTimeout,
    InvalidState,
    PduReceived,
    ProtocolViolation,
    RequestFailed,
    ResponseReceived,
    ResponseTimeout,
    Role,
    Session,
    SessionConfig,
    State,
    StateChanged,
    UnexpectedResponse,
    WindowFull,
)

from .helpers import BIND_CLASSES, BindClass, SessionPair, deliver_sm, frame, submit_sm


def bound(bind_class: BindClass = smpp.BindTransceiver, **config: object) -> SessionPair:
    esme_config = SessionConfig(**config)  # type: ignore[arg-type]
    pair = SessionPair(esme_config, SessionConfig(**config))  # type: ignore[arg-type]
    pair.bind(bind_class)
    return pair


def answers(session: Session) -> list[smpp.Pdu]:
    """Decode what the session queued for the peer."""
    framer = smpp.Framer()
    framer.receive_data(session.data_to_send())
    out = []
    while (pdu := framer.next_pdu()) is not smpp.NEED_DATA:
        assert isinstance(pdu, smpp.Pdu)
        out.append(pdu)
    return out


# --- the table ------------------------------------------------------------


def test_what_one_side_may_send_the_other_may_receive() -> None:
    for state in (State.OPEN, State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX):
        esme, smsc = TRANSITIONS[(Role.ESME, state)], TRANSITIONS[(Role.SMSC, state)]
        assert esme.may_send == smsc.may_receive, state
        assert smsc.may_send == esme.may_receive, state


def test_every_role_and_state_has_rules() -> None:
    assert set(TRANSITIONS) == {(role, state) for role in Role for state in State}


# --- bind -----------------------------------------------------------------


@pytest.mark.parametrize("bind_class", list(BIND_CLASSES))
def test_bind_moves_both_sides(bind_class: BindClass) -> None:
    pair = SessionPair()
    sent, seen = pair.send(pair.esme, bind_class(system_id="esme", password="secret"))
    assert sent.sequence_number == 1
    assert seen == [PduReceived(sent)]
    assert pair.esme.state is State.OPEN and pair.smsc.state is State.OPEN
    esme_seen = pair.answer(pair.smsc, seen[0], system_id="smsc")
    expected = BIND_CLASSES[bind_class]
    # The SMSC moved when it sent the ROK response; the ESME when it received it.
    assert pair.smsc.state is expected
    assert pair.esme.state is expected
    response, changed = esme_seen
    assert isinstance(response, ResponseReceived) and response.request == sent
    assert response.pdu.system_id == "smsc"  # type: ignore[attr-defined]
    assert changed == StateChanged(State.OPEN, expected)


def test_refused_bind_stays_open() -> None:
    pair = SessionPair()
    _, [received] = pair.send(pair.esme, smpp.BindTransmitter(system_id="esme"))
    [response] = pair.answer(pair.smsc, received, CommandStatus.RINVPASWD)
    assert isinstance(response, ResponseReceived)
    assert response.pdu.command_status == CommandStatus.RINVPASWD
    assert pair.esme.state is State.OPEN and pair.smsc.state is State.OPEN


def test_second_bind_while_bound_gets_ralybnd() -> None:
    pair = bound()
    pair.smsc.receive_data(smpp.encode(smpp.BindTransmitter(sequence_number=9)), 0.0)
    [resp] = answers(pair.smsc)
    assert isinstance(resp, smpp.BindTransmitterResp)
    assert (resp.command_status, resp.sequence_number) == (CommandStatus.RALYBND, 9)
    assert pair.smsc.state is State.BOUND_TRX


def test_second_bind_while_first_is_unanswered_gets_ralybnd() -> None:
    smsc = Session(Role.SMSC)
    [first] = smsc.receive_data(smpp.encode(smpp.BindTransceiver(sequence_number=1)), 0.0)
    [violation] = smsc.receive_data(smpp.encode(smpp.BindReceiver(sequence_number=2)), 0.0)
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, AlreadyBound)
    [resp] = answers(smsc)
    assert (resp.command_id, resp.command_status) == (
        CommandId.BIND_RECEIVER_RESP,
        CommandStatus.RALYBND,
    )
    assert isinstance(first, PduReceived)
    smsc.send(smpp.make_response(first.pdu), 0.0)
    assert smsc.state is State.BOUND_TRX


def test_outbind_then_bind_receiver() -> None:
    pair = SessionPair()
    _, [outbind] = pair.send(pair.smsc, smpp.Outbind(system_id="smsc", password="secret"))
    assert isinstance(outbind, PduReceived) and isinstance(outbind.pdu, smpp.Outbind)
    assert pair.smsc.outstanding == 0  # outbind has no response
    pair.bind(smpp.BindReceiver)


def test_esme_in_open_may_only_bind() -> None:
    esme = Session(Role.ESME)
    with pytest.raises(InvalidState):
        esme.send(submit_sm(), 0.0)
    with pytest.raises(InvalidState):
        esme.send(smpp.Unbind(), 0.0)
    assert esme.data_to_send() == b""
    esme.send(smpp.EnquireLink(), 0.0)
    esme.send(smpp.BindTransmitter(), 0.0)


# --- submit, window, sequence numbers --------------------------------------


def test_submit_and_response() -> None:
    pair = bound(smpp.BindTransmitter)
    sent, [received] = pair.send(pair.esme, submit_sm())
    assert sent.sequence_number == 2  # the bind had 1
    assert isinstance(received, PduReceived) and received.pdu == sent
    assert pair.esme.outstanding == 1 and pair.esme.window_free == 9
    [response] = pair.answer(pair.smsc, received, message_id="m-1")
    assert isinstance(response, ResponseReceived)
    assert response.request == sent and response.pdu.message_id == "m-1"  # type: ignore[attr-defined]
    assert pair.esme.outstanding == 0 and pair.esme.window_free == 10


def test_window_is_respected_and_freed_by_a_response() -> None:
    pair = bound(window=2)
    first, _ = pair.send(pair.esme, submit_sm())
    pair.send(pair.esme, submit_sm())
    assert pair.esme.window_free == 0
    with pytest.raises(WindowFull):
        pair.esme.send(submit_sm(), pair.now)
    # enquire_link and unbind are not counted against the window.
    pair.send(pair.esme, smpp.EnquireLink())
    first_received = next(
        e for e in pair.smsc_events if isinstance(e, PduReceived) and e.pdu == first
    )
    pair.answer(pair.smsc, first_received)
    assert pair.esme.window_free == 1
    pair.send(pair.esme, submit_sm())
    pair.esme.send(smpp.Unbind(), pair.now)


def test_sequence_numbers_wrap_to_1() -> None:
    esme = Session(Role.ESME, first_sequence_number=0x7FFFFFFE)
    seqs = [esme.send(smpp.BindTransceiver(), 0.0).sequence_number]
    seqs += [esme.send(smpp.EnquireLink(), 0.0).sequence_number for _ in range(3)]
    assert seqs == [0x7FFFFFFE, 0x7FFFFFFF, 1, 2]


def test_sequence_numbers_skip_those_still_outstanding() -> None:
    esme = Session(Role.ESME)
    assert esme.send(smpp.EnquireLink(), 0.0).sequence_number == 1  # left unanswered
    esme._next_sequence_number = 0x7FFFFFFF  # as if 2**31 requests had gone by
    seqs = [esme.send(smpp.EnquireLink(), 0.0).sequence_number for _ in range(2)]
    assert seqs == [0x7FFFFFFF, 2]


def test_response_must_answer_a_pending_request() -> None:
    pair = bound()
    with pytest.raises(LocalProtocolError):
        pair.smsc.send(smpp.SubmitSmResp(sequence_number=2), 0.0)
    _, [received] = pair.send(pair.esme, submit_sm())
    assert isinstance(received, PduReceived)
    with pytest.raises(LocalProtocolError):  # right number, wrong command
        pair.smsc.send(smpp.QuerySmResp(sequence_number=received.pdu.sequence_number), 0.0)
    with pytest.raises(LocalProtocolError):
        pair.smsc.send(smpp.GenericNack(sequence_number=received.pdu.sequence_number), 0.0)
    pair.answer(pair.smsc, received)
    with pytest.raises(LocalProtocolError):  # answered once already
        pair.answer(pair.smsc, received)


def test_smsc_may_not_deliver_to_a_transmitter() -> None:
    pair = bound(smpp.BindTransmitter)
    with pytest.raises(InvalidState):
        pair.smsc.send(deliver_sm(), 0.0)
    pair2 = bound(smpp.BindReceiver)
    with pytest.raises(InvalidState):
        pair2.esme.send(submit_sm(), 0.0)
    _, [received] = pair2.send(pair2.smsc, deliver_sm())
    assert isinstance(received, PduReceived)
    [response] = pair2.answer(pair2.esme, received)
    assert isinstance(response, ResponseReceived)


def test_many_in_flight_answered_out_of_order() -> None:
    pair = bound(window=50)
    sent = [pair.esme.send(submit_sm(), 0.0) for _ in range(50)]
    _, received = pair.pump()
    assert [e.pdu for e in received] == sent  # type: ignore[attr-defined]
    for event in reversed(received):
        pair.smsc.send(smpp.make_response(event.pdu, message_id="x"), 0.0)  # type: ignore[attr-defined]
    responses, _ = pair.pump()
    assert [e.request for e in responses] == list(reversed(sent))  # type: ignore[attr-defined]
    assert pair.esme.outstanding == 0


# --- answers to bad or ill-timed input -------------------------------------


def test_submit_before_bind_gets_rinvbndsts() -> None:
    smsc = Session(Role.SMSC)
    [violation] = smsc.receive_data(smpp.encode(smpp.SubmitSm(sequence_number=5)), 0.0)
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, InvalidBindStatus)
    assert violation.error.sequence_number == 5
    [resp] = answers(smsc)
    assert isinstance(resp, smpp.SubmitSmResp)
    assert (resp.command_status, resp.sequence_number) == (CommandStatus.RINVBNDSTS, 5)
    assert smsc.state is State.OPEN


def test_deliver_sm_to_a_transmitter_gets_rinvbndsts() -> None:
    pair = bound(smpp.BindTransmitter)
    [violation] = pair.esme.receive_data(smpp.encode(deliver_sm()), 0.0)
    assert isinstance(violation, ProtocolViolation)
    [resp] = answers(pair.esme)
    assert isinstance(resp, smpp.DeliverSmResp)
    assert resp.command_status == CommandStatus.RINVBNDSTS
    # The session goes on.
    pair.send(pair.esme, submit_sm())
    assert isinstance(pair.smsc_events[-1], PduReceived)


def test_illegal_request_without_response_is_only_reported() -> None:
    pair = bound(smpp.BindTransmitter)
    alert = smpp.AlertNotification(sequence_number=3, source_addr="1", esme_addr="2")
    [violation] = pair.esme.receive_data(smpp.encode(alert), 0.0)
    assert isinstance(violation, ProtocolViolation)
    assert pair.esme.data_to_send() == b""


def test_unknown_command_id_gets_generic_nack_with_its_sequence_number() -> None:
    pair = bound()
    [violation] = pair.smsc.receive_data(frame(0x00000099, 77), 0.0)
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, InvalidCommandId)
    assert pair.smsc.data_to_send() == frame(
        CommandId.GENERIC_NACK, 77, status=CommandStatus.RINVCMDID
    )
    assert pair.smsc.state is State.BOUND_TRX


def test_malformed_body_gets_generic_nack_and_the_session_goes_on() -> None:
    pair = bound()
    bad = frame(CommandId.SUBMIT_SM, 31, b"no NUL anywhere")
    events = pair.smsc.receive_data(bad + smpp.encode(smpp.EnquireLink(sequence_number=32)), 0.0)
    [violation] = events
    assert isinstance(violation, ProtocolViolation) and isinstance(violation.error, MalformedPdu)
    assert pair.smsc.data_to_send() == (
        frame(CommandId.GENERIC_NACK, 31, status=CommandStatus.RINVCMDLEN)
        + frame(CommandId.ENQUIRE_LINK_RESP, 32)
    )
    assert pair.smsc.state is State.BOUND_TRX


def test_malformed_response_fails_its_request_and_is_not_answered() -> None:
    pair = bound()
    sent = pair.esme.send(submit_sm(), 0.0)
    pair.pump()
    bad = frame(CommandId.SUBMIT_SM_RESP, sent.sequence_number, b"x" * 70)  # message_id > 65
    violation, failed = pair.esme.receive_data(bad, 0.0)
    assert isinstance(violation, ProtocolViolation)
    assert failed == RequestFailed(sent, failed.reason)  # type: ignore[attr-defined]
    assert pair.esme.outstanding == 0
    assert pair.esme.data_to_send() == b""


@pytest.mark.parametrize(
    ("wire", "seq"),
    [
        (b"\x00\x00\x00\x08\x00\x00\x00\x15", 0),
        (b"\x00\x00\x00\x08\x00\x00\x00\x15\x00\x00\x00\x00\x00\x00\x00\x0c", 12),
        (b"\x00\x10\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x0d", 13),
    ],
    ids=["short-no-header", "short-with-header", "over-max"],
)
def test_bad_command_length_gets_generic_nack_and_closes(wire: bytes, seq: int) -> None:
    pair = bound()
    events = pair.smsc.receive_data(wire, 0.0)
    violation, changed = events
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, InvalidCommandLength)
    assert changed == StateChanged(State.BOUND_TRX, State.CLOSED)
    assert pair.smsc.data_to_send() == frame(
        CommandId.GENERIC_NACK, seq, status=CommandStatus.RINVCMDLEN
    )
    # Nothing after it is trusted.
    assert pair.smsc.receive_data(smpp.encode(smpp.EnquireLink(sequence_number=41)), 0.0) == []
    assert pair.smsc.data_to_send() == b""
    with pytest.raises(InvalidState):
        pair.smsc.send(smpp.EnquireLink(), 0.0)


def test_unmatched_response_is_a_violation_and_not_answered() -> None:
    pair = bound()
    [violation] = pair.esme.receive_data(smpp.encode(smpp.SubmitSmResp(sequence_number=99)), 0.0)
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, UnexpectedResponse)
    # Right number, wrong command.
    sent = pair.esme.send(submit_sm(), 0.0)
    wrong = smpp.QuerySmResp(sequence_number=sent.sequence_number)
    [violation] = pair.esme.receive_data(smpp.encode(wrong), 0.0)
    assert isinstance(violation, ProtocolViolation)
    assert pair.esme.outstanding == 1
    pair.esme.data_to_send()
    pair.esme.receive_data(smpp.encode(smpp.GenericNack(sequence_number=5)), 0.0)
    assert pair.esme.data_to_send() == b""


def test_generic_nack_answers_any_outstanding_request() -> None:
    pair = bound()
    sent = pair.esme.send(submit_sm(), 0.0)
    nack = smpp.GenericNack(
        sequence_number=sent.sequence_number, command_status=CommandStatus.RINVCMDLEN
    )
    [response] = pair.esme.receive_data(smpp.encode(nack), 0.0)
    assert response == ResponseReceived(nack, sent)
    assert pair.esme.outstanding == 0


# --- session management the session does itself ---------------------------


@pytest.mark.parametrize("side", ["esme", "smsc"])
def test_enquire_link_is_answered_automatically(side: str) -> None:
    pair = bound()
    sender = getattr(pair, side)
    sent, seen_by_peer = pair.send(sender, smpp.EnquireLink())
    assert seen_by_peer == []
    events = pair.esme_events if side == "esme" else pair.smsc_events
    [response] = events[-1:]
    assert isinstance(response, ResponseReceived) and response.request == sent
    assert isinstance(response.pdu, smpp.EnquireLinkResp)
    assert sender.outstanding == 0


def test_enquire_link_is_tolerated_before_bind() -> None:
    smsc = Session(Role.SMSC)
    assert smsc.receive_data(smpp.encode(smpp.EnquireLink(sequence_number=3)), 0.0) == []
    assert smsc.data_to_send() == frame(CommandId.ENQUIRE_LINK_RESP, 3)


@pytest.mark.parametrize("side", ["esme", "smsc"])
def test_unbind(side: str) -> None:
    pair = bound()
    sender = getattr(pair, side)
    peer = pair.peer(sender)
    sent = sender.send(smpp.Unbind(), pair.now)
    assert sender.state is State.UNBOUND  # no request may follow an unbind
    with pytest.raises(InvalidState):
        sender.send(smpp.EnquireLink(), pair.now)
    esme_events, smsc_events = pair.pump()
    seen_by_peer, seen_by_sender = (
        (smsc_events, esme_events) if side == "esme" else (esme_events, smsc_events)
    )
    assert seen_by_peer == [StateChanged(State.BOUND_TRX, State.UNBOUND)]
    [response] = seen_by_sender
    assert isinstance(response, ResponseReceived) and response.request == sent
    assert isinstance(response.pdu, smpp.UnbindResp)
    assert peer.state is State.UNBOUND
    # After the unbind the peer's requests are refused.
    [violation] = peer.receive_data(smpp.encode(submit_sm()), pair.now)
    assert isinstance(violation, ProtocolViolation)


def test_crossed_unbinds_are_both_answered() -> None:
    pair = bound()
    pair.esme.send(smpp.Unbind(), 0.0)
    pair.smsc.send(smpp.Unbind(), 0.0)
    esme_events, smsc_events = pair.pump()
    assert [type(e) for e in esme_events] == [ResponseReceived]
    assert [type(e) for e in smsc_events] == [ResponseReceived]
    assert pair.esme.outstanding == pair.smsc.outstanding == 0


def test_pending_request_can_be_answered_after_unbind() -> None:
    pair = bound()
    _, [received] = pair.send(pair.esme, submit_sm())
    pair.send(pair.esme, smpp.Unbind())
    [response] = pair.answer(pair.smsc, received)
    assert isinstance(response, ResponseReceived)


# --- timers ---------------------------------------------------------------


def test_enquire_link_due_once_per_idle_period() -> None:
    pair = bound(enquire_link_interval=30.0, inactivity_timeout=None)
    esme = pair.esme
    assert esme.next_deadline() == 30.0
    assert esme.poll(29.9) == []
    assert esme.poll(30.0) == [EnquireLinkDue()]
    assert esme.poll(60.0) == []  # once per idle period
    esme.send(smpp.EnquireLink(), 61.0)  # re-armed by traffic
    assert esme.next_deadline() == 61.0 + 10.0  # the enquire_link's own response timeout
    pair.now = 62.0
    pair.pump()
    assert esme.next_deadline() == 62.0 + 30.0
    assert esme.poll(92.0) == [EnquireLinkDue()]


def test_enquire_link_not_due_before_bind() -> None:
    esme = Session(Role.ESME, SessionConfig(session_init_timeout=None, inactivity_timeout=None))
    assert esme.next_deadline() is None
    assert esme.poll(1000.0) == []


def test_response_timeout_frees_the_window() -> None:
    pair = bound(window=1, enquire_link_interval=None, inactivity_timeout=None)
    pair.now = 5.0
    sent, _ = pair.send(pair.esme, submit_sm())
    with pytest.raises(WindowFull):
        pair.esme.send(submit_sm(), 5.0)
    assert pair.esme.next_deadline() == 15.0
    assert pair.esme.poll(14.0) == []
    assert pair.esme.poll(15.0) == [ResponseTimeout(sent)]
    assert pair.esme.outstanding == 0 and pair.esme.window_free == 1
    assert pair.esme.next_deadline() is None
    # A late response now matches nothing.
    [late] = pair.smsc_events[-1:]
    [violation] = pair.answer(pair.smsc, late)
    assert isinstance(violation, ProtocolViolation)


def test_answered_requests_do_not_time_out() -> None:
    pair = bound(enquire_link_interval=None, inactivity_timeout=None)
    _, [received] = pair.send(pair.esme, submit_sm())
    pair.now = 1.0
    second, _ = pair.send(pair.esme, submit_sm())
    pair.answer(pair.smsc, received)
    assert pair.esme.next_deadline() == 11.0
    assert pair.esme.poll(100.0) == [ResponseTimeout(second)]


def test_inactivity_timeout() -> None:
    pair = bound(enquire_link_interval=None, inactivity_timeout=120.0)
    esme = pair.esme
    esme.send(smpp.EnquireLink(), 100.0)  # sending does not count as activity
    esme.data_to_send()
    assert esme.next_deadline() == 110.0
    esme.poll(110.0)
    assert esme.next_deadline() == 120.0
    assert esme.poll(120.0) == [InactivityTimeout()]
    assert esme.poll(500.0) == []
    esme.receive_data(smpp.encode(smpp.EnquireLink(sequence_number=1)), 600.0)
    assert esme.next_deadline() == 720.0


def test_session_init_timeout() -> None:
    config = SessionConfig(session_init_timeout=30.0, inactivity_timeout=None)
    smsc = Session(Role.SMSC, config, now=100.0)
    assert smsc.next_deadline() == 130.0
    assert smsc.poll(129.0) == []
    assert smsc.poll(130.0) == [InactivityTimeout()]
    assert smsc.poll(200.0) == []
    # Once bound it no longer applies.
    pair = SessionPair(config, config, now=100.0)
    pair.bind()
    assert pair.smsc.poll(1000.0) == [EnquireLinkDue()]


def test_closed_session_has_no_timers() -> None:
    esme = Session(Role.ESME)
    esme.close()
    assert esme.state is State.CLOSED
    assert esme.next_deadline() is None
    assert esme.poll(1e9) == []


def test_connection_lost_fails_every_outstanding_request() -> None:
    pair = bound()
    sent = [pair.esme.send(submit_sm(), 0.0) for _ in range(3)]
    link = pair.esme.send(smpp.EnquireLink(), 0.0)
    events = pair.esme.connection_lost()
    assert events == [RequestFailed(p, "connection lost") for p in [*sent, link]] + [
        StateChanged(State.BOUND_TRX, State.CLOSED)
    ]
    assert pair.esme.outstanding == 0 and pair.esme.state is State.CLOSED
    assert pair.esme.poll(1e9) == []


def test_connection_lost_after_close_still_fails_outstanding() -> None:
    pair = bound()
    sent = pair.esme.send(submit_sm(), 0.0)
    pair.esme.close()
    assert pair.esme.connection_lost() == [RequestFailed(sent, "connection lost")]


# --- reads of any size ------------------------------------------------------


def test_partial_reads_one_byte_at_a_time() -> None:
    pair = bound()
    pdus = [pair.esme.send(submit_sm(b"x" * n), 0.0) for n in range(1, 6)]
    pdus.append(pair.esme.send(smpp.EnquireLink(), 0.0))
    wire = pair.esme.data_to_send()
    events = []
    for i in range(len(wire)):
        events += pair.smsc.receive_data(wire[i : i + 1], 0.0)
    assert events == [PduReceived(p) for p in pdus[:-1]]
    assert answers(pair.smsc) == [smpp.EnquireLinkResp(sequence_number=pdus[-1].sequence_number)]


def test_many_pdus_in_one_read() -> None:
    smsc = Session(Role.SMSC)
    bind = smpp.encode(smpp.BindTransceiver(sequence_number=1))
    [received] = smsc.receive_data(bind, 0.0)
    smsc.send(smpp.make_response(received.pdu), 0.0)  # type: ignore[attr-defined]
    smsc.data_to_send()
    wire = b"".join(
        smpp.encode(smpp.SubmitSm(sequence_number=n, short_message=b"hi")) for n in range(2, 52)
    )
    events = smsc.receive_data(wire, 0.0)
    assert len(events) == 50
    assert [e.pdu.sequence_number for e in events] == list(range(2, 52))  # type: ignore[attr-defined]
