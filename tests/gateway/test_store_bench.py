"""python -m gateway.store_bench keeps working (a small run, not a measurement)."""

from __future__ import annotations

import pytest

from gateway import store_bench


def test_store_bench_runs_every_phase(capsys: pytest.CaptureFixture[str]) -> None:
    store_bench.main(["--messages", "30", "--segments", "2", "--callback", "--receipt-batch", "7"])
    out = capsys.readouterr().out
    for phase in ("AcceptMessage", "PartUpdate", "ApplyReceipt", "MarkSmppReceiptsSent"):
        assert phase in out
    assert "all four" in out
