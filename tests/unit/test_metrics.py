"""``GET /metrics`` (issue 10 §7): what sipdial.metrics reports, parsed back with
``prometheus_client.parser`` as Prometheus would, and who may scrape it over HTTP."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from twisted.internet.selectreactor import SelectReactor

from sipdial.api import WorkerReply
from sipdial.config import ConfigError, MetricsConfig, parse_config
from sipdial.metrics import CallMetrics, Metrics, MetricSources, merge
from sipdial.store import CallEvent, CallRecord
from tests.unit.test_config import toml
from tests.unit.test_http_api import (  # the HTTP test server and its fake engine
    FakeApi,
    FakeWorkers,
    Server,
    call_body,
    reactor,  # noqa: F401  (fixture)
    serve,
)


def sources(**overrides: Any) -> MetricSources:
    values: dict[str, Any] = dict(
        calls_by_state=lambda: ["user_ringing", "user_ringing", "connected"],
        relayed_calls=lambda: 2,
        registrations=lambda: 5,
        transactions=lambda: (3, 4),
        retransmissions=lambda: 7,
        messages=lambda: (100, 90, 1, 2),
        webhooks=lambda: (10, 3, 1, 4),
        lag=lambda: 0.012,
    )
    values.update(overrides)
    return MetricSources(**values)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def record(mode: str = "bridge", created: float = 100.0) -> CallRecord:
    return CallRecord(id="c1", user="201", to="+4930123456", mode=mode,
                      state="calling_user", cause=None, created_at=created, ended_at=None)


def test_a_calls_life_is_counted_and_timed() -> None:
    calls = CallMetrics()
    metrics = Metrics(sources(), calls, process=False)
    r = record()
    calls.started_call(r)
    calls.call_accepted(0.003)
    calls.changed(r, CallEvent("connected", 104.0, None, None))
    r.cause = "completed"
    calls.changed(r, CallEvent("ended", 130.0, None, None))
    other = record(mode="refer")
    calls.started_call(other)
    other.cause = "user_no_answer"
    calls.changed(other, CallEvent("ended", 130.0, None, None))

    got = samples(metrics.exposition().decode())
    assert got[("sipdial_calls_started_total", (("mode", "bridge"),))] == 1
    assert got[("sipdial_calls_started_total", (("mode", "refer"),))] == 1
    assert got[("sipdial_calls_ended_total", (("cause", "completed"), ("mode", "bridge")))] == 1
    assert got[("sipdial_calls_ended_total",
                (("cause", "user_no_answer"), ("mode", "refer")))] == 1
    # connected 4 s after the call was created: in the 5 s bucket, not in the 2.5 s one
    connected = (("stage", "connected"),)
    assert got[("sipdial_call_setup_seconds_bucket", (("le", "2.5"), *connected))] == 0
    assert got[("sipdial_call_setup_seconds_bucket", (("le", "5.0"), *connected))] == 1
    assert got[("sipdial_call_setup_seconds_count", connected)] == 1
    assert got[("sipdial_call_setup_seconds_sum", connected)] == pytest.approx(4.0)
    accepted = (("stage", "accepted"),)
    assert got[("sipdial_call_setup_seconds_bucket", (("le", "0.0025"), *accepted))] == 0
    assert got[("sipdial_call_setup_seconds_bucket", (("le", "0.005"), *accepted))] == 1
    assert got[("sipdial_call_setup_seconds_bucket", (("le", "+Inf"), *accepted))] == 1


def test_scrape_time_figures_come_from_the_sources() -> None:
    got = samples(Metrics(sources(), process=False).exposition().decode())
    assert got[("sipdial_calls_in_progress", (("state", "user_ringing"),))] == 2
    assert got[("sipdial_calls_in_progress", (("state", "connected"),))] == 1
    assert got[("sipdial_calls_in_progress", (("state", "target_ringing"),))] == 0  # listed
    assert ("sipdial_calls_in_progress", (("state", "ended"),)) not in got
    assert got[("sipdial_relayed_calls_in_progress", ())] == 2
    assert got[("sipdial_registrations", ())] == 5
    assert got[("sipdial_sip_transactions", (("kind", "server"),))] == 3
    assert got[("sipdial_sip_transactions", (("kind", "client"),))] == 4
    assert got[("sipdial_sip_retransmissions_total", ())] == 7
    assert got[("sipdial_sip_messages_received_total", ())] == 100
    assert got[("sipdial_sip_messages_sent_total", ())] == 90
    assert got[("sipdial_sip_messages_malformed_total", ())] == 1
    assert got[("sipdial_sip_messages_dropped_total", ())] == 2
    assert got[("sipdial_webhook_deliveries_total", (("outcome", "delivered"),))] == 10
    assert got[("sipdial_webhook_deliveries_total", (("outcome", "failed_attempt"),))] == 3
    assert got[("sipdial_webhook_deliveries_total", (("outcome", "given_up"),))] == 1
    assert got[("sipdial_webhook_queue", ())] == 4
    assert got[("sipdial_event_loop_lag_seconds", ())] == pytest.approx(0.012)


def test_http_methods_from_the_network_cannot_grow_the_label_set() -> None:
    metrics = Metrics(sources(), process=False)
    for method in ("GET", "BREW", "X" * 100, "GET"):
        metrics.http_request(method, 404)
    got = samples(metrics.exposition().decode())
    assert got[("sipdial_http_requests_total", (("code", "404"), ("method", "GET")))] == 2
    assert got[("sipdial_http_requests_total", (("code", "404"), ("method", "other")))] == 2


def test_the_process_collector_is_included() -> None:
    text = Metrics(sources()).exposition().decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "process_resident_memory_bytes" in names


def test_workers_are_merged_with_a_worker_label() -> None:
    first = Metrics(sources(registrations=lambda: 1), process=False).exposition().decode()
    second = Metrics(sources(registrations=lambda: 2), process=False).exposition().decode()
    merged = merge({0: first, 1: second}).decode()
    got = samples(merged)
    assert got[("sipdial_registrations", (("worker", "0"),))] == 1
    assert got[("sipdial_registrations", (("worker", "1"),))] == 2
    # one family each (a duplicated TYPE line is an invalid exposition)
    assert merged.count("# TYPE sipdial_registrations gauge") == 1


def test_merging_refuses_an_exposition_that_does_not_parse() -> None:
    with pytest.raises(ValueError):
        merge({0: "sipdial_x 1\n", 1: "this is { not metrics\n"})


# ---------------------------------------------------------------------------- over HTTP


def fake_metrics() -> Metrics:
    return Metrics(sources(), process=False)


@pytest.fixture
def scraped(reactor: SelectReactor) -> Iterator[Server]:  # noqa: F811
    yield from serve(reactor, FakeApi(), metrics=fake_metrics())


def test_metrics_need_an_admin_token_by_default(scraped: Server) -> None:
    assert scraped.request("GET", "/metrics", token=None).status == 401
    r = scraped.request("GET", "/metrics", token="tok-201")
    assert r.status == 403 and r.json["error"]["code"] == "forbidden"
    r = scraped.request("GET", "/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert samples(r.raw.decode())[("sipdial_registrations", ())] == 5


def test_requests_and_created_calls_are_counted(scraped: Server) -> None:
    assert scraped.request("POST", "/v1/calls", body=call_body()).status == 201
    assert scraped.request("GET", "/nowhere").status == 404
    got = samples(scraped.request("GET", "/metrics").raw.decode())
    assert got[("sipdial_http_requests_total", (("code", "201"), ("method", "POST")))] == 1
    assert got[("sipdial_http_requests_total", (("code", "404"), ("method", "GET")))] == 1
    assert got[("sipdial_call_setup_seconds_count", (("stage", "accepted"),))] == 1


def test_refused_calls_are_not_timed(reactor: SelectReactor) -> None:  # noqa: F811
    for server in serve(reactor, FakeApi(), metrics=fake_metrics()):
        assert server.request("POST", "/v1/calls", body=call_body(user="999")).status == 404
        got = samples(server.request("GET", "/metrics").raw.decode())
        assert got[("sipdial_call_setup_seconds_count", (("stage", "accepted"),))] == 0


def test_the_metrics_token_reads_metrics_and_nothing_else(reactor: SelectReactor) -> None:  # noqa: F811
    token = "scrape-token-0123456789"
    for server in serve(reactor, FakeApi(), metrics=fake_metrics(),
                        metrics_config=MetricsConfig(token=token)):
        assert server.request("GET", "/metrics", token=token).status == 200
        assert server.request("GET", "/metrics", token="wrong-token").status == 401
        assert server.request("GET", "/metrics").status == 200  # admin still may
        assert server.request("GET", "/v1/calls", token=token).status == 401


def test_allow_from_alone_opens_metrics_to_those_networks(reactor: SelectReactor) -> None:  # noqa: F811
    here = MetricsConfig(allow_from=(ipaddress.ip_network("127.0.0.0/8"),), open=True)
    for server in serve(reactor, FakeApi(), metrics=fake_metrics(), metrics_config=here):
        assert server.request("GET", "/metrics", token=None).status == 200
        assert server.request("GET", "/metrics", token="tok-201").status == 403
    elsewhere = MetricsConfig(allow_from=(ipaddress.ip_network("192.0.2.0/24"),), open=True)
    for server in serve(reactor, FakeApi(), metrics=fake_metrics(),
                        metrics_config=elsewhere):
        r = server.request("GET", "/metrics")  # even an admin token: not from here
        assert r.status == 403 and r.json["error"]["code"] == "forbidden_source"
        assert "[metrics] allow_from" in r.json["error"]["message"]
        assert server.request("GET", "/v1/calls").status == 200  # the API is not limited


def test_a_token_with_allow_from_still_needs_the_token(reactor: SelectReactor) -> None:  # noqa: F811
    config = parse_config(toml(metrics='[metrics]\ntoken = "scrape-0123456789abcdef"\n'
                                       'allow_from = ["127.0.0.0/8"]\n'))
    assert not config.metrics.open
    for server in serve(reactor, FakeApi(), metrics=fake_metrics(),
                        metrics_config=config.metrics):
        assert server.request("GET", "/metrics", token=None).status == 401
        assert server.request("GET", "/metrics", token="scrape-0123456789abcdef").status == 200


def test_metrics_are_behind_the_apis_allow_from_by_default() -> None:
    config = parse_config(toml(http='[http]\nlisten = "127.0.0.1:0"\n'
                                    'allow_from = ["10.0.0.0/8"]\n'))
    assert config.metrics.allow_from == (ipaddress.ip_network("10.0.0.0/8"),)
    assert not config.metrics.open  # inherited: credentials still needed


def test_without_metrics_there_is_no_such_resource(reactor: SelectReactor) -> None:  # noqa: F811
    for server in serve(reactor, FakeApi()):
        assert server.request("GET", "/metrics").status == 404


class MetricWorkers(FakeWorkers):
    """Worker 1 answers /metrics with its exposition; worker 2 is restarting."""


def test_with_workers_one_scrape_has_every_workers_metrics(reactor: SelectReactor) -> None:  # noqa: F811
    workers = MetricWorkers()
    other = Metrics(sources(registrations=lambda: 9), process=False).exposition()
    workers.replies["GET /metrics"] = WorkerReply(200, other)
    for server in serve(reactor, FakeApi(), metrics=fake_metrics(), workers=workers,
                        internal_token="internal-secret"):
        r = server.request("GET", "/metrics")
        assert r.status == 200
        got = samples(r.raw.decode())
        assert got[("sipdial_registrations", (("worker", "0"),))] == 5
        assert got[("sipdial_registrations", (("worker", "1"),))] == 9
        assert got[("sipdial_metrics_unavailable_workers", ())] == 1  # worker 2
        # the others were asked with the internal token, not the client's credentials
        assert {(w, a) for w, _m, _t, a in workers.asked} == {
            (1, "Bearer internal-secret"), (2, "Bearer internal-secret")}
        # and that token is what another worker's private site accepts
        assert server.request("GET", "/metrics", token="internal-secret").status == 200


def test_metrics_config_is_validated() -> None:
    config = parse_config(toml(metrics='[metrics]\ntoken = "scrape-0123456789abcdef"\n'
                                       'allow_from = ["10.0.0.0/8"]\n'))
    assert config.metrics.token == "scrape-0123456789abcdef"
    assert config.metrics.allow_from == (ipaddress.ip_network("10.0.0.0/8"),)
    assert not config.metrics.open
    assert parse_config(toml()).metrics == MetricsConfig()
    with pytest.raises(ConfigError, match=r"metrics\.token: must be at least 16"):
        parse_config(toml(metrics='[metrics]\ntoken = "short"\n'))
    with pytest.raises(ConfigError, match="must differ from every"):
        parse_config(toml(api='[api]\ntokens = { "admin-token-0123456789" = "*" }\n',
                          metrics='[metrics]\ntoken = "admin-token-0123456789"\n'))
    with pytest.raises(ConfigError, match=r"metrics\.allow_from"):
        parse_config(toml(metrics='[metrics]\nallow_from = ["not a network"]\n'))


def test_sample_type_is_what_merge_relies_on() -> None:
    # merge() relabels with Sample._replace: a NamedTuple in prometheus_client
    assert hasattr(Sample("x", {}, 1.0), "_replace")


def test_a_worker_that_does_not_report_registrations_leaves_the_family_empty() -> None:
    got = samples(Metrics(sources(registrations=lambda: None), process=False)
                  .exposition().decode())
    assert ("sipdial_registrations", ()) not in got
