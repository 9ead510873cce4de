"""``GET /metrics`` after real calls (issue 10 §7): baresip is user 201's phone, SIPp the
target. The scrape is parsed with ``prometheus_client.parser``; with ``--workers 2`` one
scrape carries both workers' samples, labelled."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.c2d_helpers import ROUTE_MATCH, TARGET, place_call, user
from tests.peers.baresip import Baresip
from tests.peers.sipp import LOOPBACK, Sipp
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels`` (all workers)."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all((k, v2) in ls for k, v2 in labels.items()))


@pytest.mark.parametrize("workers", [1, 2])
def test_calls_registrations_and_sip_traffic_show_in_one_scrape(tmp_path: Path,
                                                                workers: int) -> None:
    calls = 2
    with Sipp.uas(tmp_path, "uas_answer_then_bye.xml", calls=calls, duration_ms=200,
                  timeout=60) as dest, \
            Sipdial(tmp_path, workers=workers, users=[user("201", auto_answer=True)],
                    routes=[{"match": ROUTE_MATCH,
                             "uri": f"sip:{{number}}@{LOOPBACK}:{dest.port}"}],
                    extra='[metrics]\ntoken = "scrape-token-0123456789"\n') as sd:
        dest.start()
        with Baresip(tmp_path, user="201", password="secret201",
                     registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False) as phone:
            phone.wait_registered()
            sd.wait_registered("201")
            for _ in range(calls):
                call = place_call(sd, "201", TARGET, mode="bridge")
                final = sd.wait_state(call["id"], "ended", timeout=30)
                assert final["cause"] == "completed", final
            got = sd.metrics(token="scrape-token-0123456789")
            assert total(got, "sipdial_registrations") == 1
        assert total(got, "sipdial_calls_started_total", mode="bridge") == calls
        assert total(got, "sipdial_calls_ended_total", mode="bridge", cause="completed") == calls
        assert total(got, "sipdial_call_setup_seconds_count", stage="connected") == calls
        assert total(got, "sipdial_call_setup_seconds_count", stage="accepted") == calls
        assert total(got, "sipdial_calls_in_progress") == 0
        assert total(got, "sipdial_sip_messages_received_total") > 0
        assert total(got, "sipdial_sip_messages_sent_total") > 0
        assert total(got, "sipdial_http_requests_total", method="POST", code="201") == calls
        assert total(got, "process_resident_memory_bytes") > 0
        if workers == 2:
            assert {dict(labels).get("worker") for (name, labels) in got
                    if name == "sipdial_event_loop_lag_seconds"} == {"0", "1"}
            # the registrations every worker holds are counted once (worker 0's)
            assert [dict(labels).get("worker") for (name, labels) in got
                    if name == "sipdial_registrations"] == ["0"]
            assert total(got, "sipdial_metrics_unavailable_workers") == 0
        # a user's token reads no metrics; the scrape token no calls
        status, body = sd.api("GET", "/metrics", token="tok-201")
        assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body = sd.api("GET", "/v1/calls", token="scrape-token-0123456789")
        assert status == 401, body
