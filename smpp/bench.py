"""`python -m smpp.bench`: codec rates of smpp and of smpplib, in one run, on one core.

Prints decodes per second and encode+decode round trips per second for a
submit_sm and for a deliver_sm receipt with TLVs, and the ratio to smpplib
(installed with the test extra). Best of several runs, so a busy neighbour
costs less. This is a measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from . import codec
from .pdu import DeliverSm, Pdu, SubmitSm

RECEIPT = (
    b"id:0123456789abcdef sub:001 dlvrd:001 submit date:2612040101 done date:2612040102 "
    b"stat:DELIVRD err:000 text:Your invoice 1234"
)


def sample_submit_sm() -> SubmitSm:
    return SubmitSm(
        sequence_number=7,
        source_addr_ton=5,
        source_addr="ACME",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="34600123456",
        registered_delivery=1,
        short_message=b"Your invoice 1234 is due on 12/12. Pay at https://pay.example/i/1234",
    )


def sample_receipt() -> DeliverSm:
    return DeliverSm(
        sequence_number=9,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="34600123456",
        destination_addr="ACME",
        esm_class=0x04,
        short_message=RECEIPT,
        receipted_message_id="0123456789abcdef",
        message_state=2,
        network_error_code=b"\x03\x00\x00",
    )


def rate(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second of `fn`, best of three runs of about `seconds / 3` each."""
    n = 1
    while True:  # calibrate a batch that takes ~20 ms
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > 0.02:
            break
        n *= 2
    best = 0.0
    for _ in range(3):
        calls = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while time.perf_counter() < deadline:
            for _ in range(n):
                fn()
            calls += n
        best = max(best, calls / (time.perf_counter() - start))
    return best


def _ours(pdu: Pdu) -> tuple[Callable[[], Any], Callable[[], Any]]:
    wire = codec.encode(pdu)
    decode, encode = codec.decode, codec.encode
    return (lambda: decode(wire)), (lambda: decode(encode(pdu)))


def _smpplib(kind: str) -> tuple[Callable[[], Any], Callable[[], Any]] | None:
    try:
        import smpplib.smpp  # type: ignore[import-untyped]
    except ImportError:
        return None

    class _Sequencer:  # smpplib takes sequence numbers from a client object
        n = 0

        def next_sequence(self) -> int:
            self.n += 1
            return self.n

    client = _Sequencer()
    if kind == "submit_sm":
        s = sample_submit_sm()
        pdu = smpplib.smpp.make_pdu(
            "submit_sm",
            client=client,
            source_addr_ton=s.source_addr_ton,
            source_addr=s.source_addr,
            dest_addr_ton=s.dest_addr_ton,
            dest_addr_npi=s.dest_addr_npi,
            destination_addr=s.destination_addr,
            registered_delivery=s.registered_delivery,
            short_message=s.short_message,
        )
    else:
        r = sample_receipt()
        pdu = smpplib.smpp.make_pdu(
            "deliver_sm",
            client=client,
            source_addr_ton=r.source_addr_ton,
            source_addr_npi=r.source_addr_npi,
            source_addr=r.source_addr,
            destination_addr=r.destination_addr,
            esm_class=r.esm_class,
            short_message=r.short_message,
            receipted_message_id=r.receipted_message_id,
            message_state=r.message_state,
            network_error_code=r.network_error_code,
        )
    wire = pdu.generate()
    parse = smpplib.smpp.parse_pdu
    return (lambda: parse(wire, client=client)), (lambda: parse(pdu.generate(), client=client))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smpp.bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    args = parser.parse_args(argv)

    print(f"{'pdu':<12} {'impl':<8} {'decode/s':>12} {'encode+decode/s':>16}")
    for kind, sample in (("submit_sm", sample_submit_sm()), ("deliver_sm", sample_receipt())):
        dec, rt = _ours(sample)
        ours = rate(dec, args.seconds), rate(rt, args.seconds)
        print(f"{kind:<12} {'smpp':<8} {ours[0]:>12,.0f} {ours[1]:>16,.0f}")
        theirs_fns = _smpplib(kind)
        if theirs_fns is None:
            print(f"{kind:<12} {'smpplib':<8} {'(not installed)':>12}")
            continue
        theirs = rate(theirs_fns[0], args.seconds), rate(theirs_fns[1], args.seconds)
        print(f"{kind:<12} {'smpplib':<8} {theirs[0]:>12,.0f} {theirs[1]:>16,.0f}")
        print(
            f"{kind:<12} {'ratio':<8} {ours[0] / theirs[0]:>11.1f}x {ours[1] / theirs[1]:>15.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
