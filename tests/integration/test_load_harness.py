"""The load harness itself (issue 9 §1): a small run per mode, every call completes and the
report agrees with the calls it was made from. No speed is asserted (figures belong to
benchmarks); what is checked is that the harness counts right.

Real parts: a sipdial process, the phone farm (``loadtest/farm.py``, its own process, digest
REGISTERs, REFER handled like a phone), a SIPp destination, HTTP over loopback.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loadtest.harness import STATES, Plan, number, run
from loadtest.report import summarise, text, write

pytestmark = pytest.mark.integration


def _consistent(calls: list[dict[str, object]], summary: dict[str, object], n: int) -> None:
    assert summary["posts"] == n and summary["accepted"] == n
    causes = summary["causes"]
    assert isinstance(causes, dict) and sum(causes.values()) == n
    latency = summary["latency_ms"]
    assert isinstance(latency, dict)
    assert latency["http_to_phone_invite"]["n"] == sum(1 for c in calls if c["phone_invite"])
    assert latency["http_to_connected"]["n"] == sum(1 for c in calls if c["connected"])
    for c in calls:
        sent, invite = c["http_sent"], c["phone_invite"]
        assert isinstance(sent, float)
        # the phone saw the INVITE after the POST went out (one machine, one wall clock)
        assert invite is None or (isinstance(invite, float) and invite >= sent), c
        times = [c[s] for s in STATES if c[s] is not None]
        assert times == sorted(times), c  # sipdial's states in order


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["bridge", "refer"])
def test_small_run_every_call_completes_and_the_report_adds_up(tmp_path: Path,
                                                                mode: str) -> None:
    plan = Plan(mode=mode, rate=5.0, calls=20, users=5, hold_ms=300, max_seconds=120.0,
                drain_seconds=15.0)
    r = run(plan, tmp_path / "run")
    summary = summarise(r)
    files = write(r, summary, tmp_path / "report")
    assert summary["completed"] == 20, text(summary)
    assert summary["sustained"] is True, text(summary)
    assert summary["unexpected_failures"] == {}
    _consistent(r.calls, summary, 20)
    assert {c["to"] for c in r.calls} == {number(i) for i in range(20)}
    assert all(c["phone_invite"] and c["connected"] for c in r.calls), r.calls
    assert summary["sipdial_log"]["tracebacks"] == 0
    assert summary["phones"].get("calls", 0) >= 20, summary["phones"]
    # the files a reviewer reads
    on_disk = json.loads((tmp_path / "report" / "report.json").read_text())
    assert on_disk["completed"] == 20 and on_disk["plan"]["mode"] == mode
    with open(tmp_path / "report" / "calls.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and {row["cause"] for row in rows} == {"completed"}
    for png in ("rate.png", "latency.png", "latency_hist.png", "resources.png"):
        path = tmp_path / "report" / png
        assert path in files and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(180)
def test_rejected_and_unanswered_shares_are_counted_as_the_plan_asked(tmp_path: Path) -> None:
    plan = Plan(mode="bridge", rate=10.0, calls=20, users=5, hold_ms=200,
                reject_share=0.25, no_answer_share=0.25, ring_timeout=1.0,
                max_seconds=120.0, drain_seconds=15.0, seed=7)
    r = run(plan, tmp_path / "run")
    summary = summarise(r)
    causes = summary["causes"]
    rejected = causes.get("user_busy", 0) + causes.get("user_rejected", 0)
    unanswered = causes.get("user_no_answer", 0)
    assert rejected + unanswered + causes.get("completed", 0) == 20, causes
    assert rejected >= 1 and unanswered >= 1 and causes.get("completed", 0) >= 1, causes
    assert summary["unexpected_failures"] == {}, text(summary)
    # the phones' own record agrees with sipdial's about who rejected
    phone_rejects = sum(1 for c in r.calls if c["cause"] in ("user_busy", "user_rejected"))
    assert phone_rejects == rejected
    _consistent(r.calls, summary, 20)


@pytest.mark.timeout(180)
def test_a_small_run_on_two_workers_with_the_rtp_probe(tmp_path: Path) -> None:
    """``--workers 2 --prompt --rtp-probe``: every call is found in the workers' files (worker
    0's is the configured one), both workers own calls, and the probe timed the prompts."""
    plan = Plan(mode="bridge", prompt=True, dtmf_after_ms=1000, rtp_probe=True, rate=5.0,
                calls=20, users=5, hold_ms=300, max_seconds=120.0, drain_seconds=15.0,
                workers=2, http_conns=16)
    r = run(plan, tmp_path / "run")
    summary = summarise(r)
    assert summary["completed"] == 20 and summary["sustained"] is True, text(summary)
    _consistent(r.calls, summary, 20)
    owners = {c["call_id"][:2] for c in r.calls}
    # 16 keep-alive connections, spread by the kernel: all on one worker is ~2**-15
    assert owners == {"00", "01"}, owners
    rtp = summary["rtp_probe"]
    assert rtp is not None and rtp["streams"] == 20, rtp
    assert rtp["packets"] >= 20 * 40  # ~1 s of prompt each, 50 packets/s
    assert rtp["sequence_gaps"] == 0 and rtp["kernel_drops"] == 0
    assert rtp["interval_deviation_ms"]["p50"] is not None
    assert "prompt RTP at the phones: 20 streams" in text(summary)


@pytest.mark.timeout(180)
def test_phones_that_drop_the_refer_to_parameters_on_two_workers(tmp_path: Path) -> None:
    """REFER mode, two workers, phones whose referred INVITE has no ``x-c2d``: it goes where
    its Call-ID hashes unless the workers told each other which of them waits for that user
    and number (sipdial.sip.Referrals). Before, about half the calls became a relayed call of
    their own and the click-to-dial call never connected."""
    plan = Plan(mode="refer", drop_refer_params=True, rate=5.0, calls=20, users=5,
                hold_ms=300, max_seconds=120.0, drain_seconds=15.0, workers=2, http_conns=16)
    r = run(plan, tmp_path / "run")
    summary = summarise(r)
    assert summary["completed"] == 20 and summary["sustained"] is True, text(summary)
    _consistent(r.calls, summary, 20)
    assert {c["call_id"][:2] for c in r.calls} == {"00", "01"}
    # matched to its click-to-dial call: the destination's ringing is the call's (relayed
    # as a call of its own, the c2d call connected only on the phone's final NOTIFY)
    assert all(c["target_ringing"] and c["connected"] for c in r.calls), r.calls
    assert summary["sipdial_log"]["tracebacks"] == 0
