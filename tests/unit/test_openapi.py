"""``GET /openapi.json`` (issue 10 §7): made from the route table, so every route is in it;
the documents the engine writes match its schemas (checked with jsonschema, as schemathesis
does against a live sipdial in tests/integration/test_openapi_contract.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from twisted.internet.selectreactor import SelectReactor

from sipdial.api.http import _BODY_FIELDS, _ROUTES, _openapi_document
from sipdial.api.schema import CALL_REQUEST
from sipdial.store import CallEvent, CallRecord
from tests.unit.test_http_api import FakeApi, Server, serve
from tests.unit.test_http_api import reactor as reactor


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return _openapi_document()


def validator(document: dict[str, Any], component: str) -> Any:
    """A JSON Schema 2020-12 validator of one component (its $refs resolved in the
    document), with the Rust validator schemathesis itself uses."""
    schema = {"$ref": f"#/components/schemas/{component}",
              "components": document["components"]}
    return jsonschema_rs.Draft202012Validator(schema)


_EXAMPLES = {"call_id": "0abc123", "token": "eyJhIjoxfQ.c2ln", "name": "app.js",
             "contact_id": "17"}


def test_each_documented_path_is_the_path_its_route_answers(document: dict[str, Any]) -> None:
    """The template a client builds from the document reaches the route it documents (and
    no other one first), with the parameter where the route reads it."""
    for route in _ROUTES:
        item = document["paths"][route.template]
        path = route.template.format(**_EXAMPLES)
        first = next(r for r in _ROUTES if r.pattern.fullmatch(path))
        assert first is route, (route.template, first.template)
        match = route.pattern.fullmatch(path)
        assert match is not None
        params = {k: v for k, v in match.groupdict().items() if k != "version"}  # CAMARA's
        assert params == {p.name: _EXAMPLES[p.name] for p in route.path_params}
        for method, op in item.items():
            assert op["responses"], (route.template, method)
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(params), (route.template, method)
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_the_validator_accepts_exactly_the_documented_body_fields() -> None:
    assert set(CALL_REQUEST["properties"]) == _BODY_FIELDS


def test_every_schema_in_the_document_is_valid_json_schema(document: dict[str, Any]) -> None:
    for schema in document["components"]["schemas"].values():
        jsonschema_rs.meta.validate(schema)
    with pytest.raises(jsonschema_rs.ValidationError):  # the check can fail
        jsonschema_rs.meta.validate({"type": 5})


def test_a_call_as_the_engine_writes_it_matches_the_call_schema(
        document: dict[str, Any]) -> None:
    record = CallRecord(id="0abc", user="201", to="+4930123456", mode="bridge",
                        state="ended", cause="completed", created_at=1.0, ended_at=30.5,
                        metadata={"ticket": 4711})
    record.events = [CallEvent("calling_user", 1.0, None, "1 device(s)"),
                     CallEvent("ended", 30.5, 200, None)]
    validator(document, "Call").validate(record.to_json())
    record.cause = "no such cause"
    with pytest.raises(jsonschema_rs.ValidationError):
        validator(document, "Call").validate(record.to_json())


def test_the_call_request_schema_refuses_what_the_api_refuses(
        document: dict[str, Any]) -> None:
    check = validator(document, "CallRequest")
    check.validate({"user": "201", "to": "+4930123456", "device": None, "mode": "refer"})
    for bad in ({"to": "1"}, {"user": "201", "to": "1", "color": "red"},
                {"user": "201", "to": "1", "mode": "teleport"},
                {"user": "a b", "to": "1"}, {"user": "201", "to": "1", "caller_id": "x"}):
        with pytest.raises(jsonschema_rs.ValidationError):
            check.validate(bad)


@pytest.fixture
def server(reactor: SelectReactor) -> Iterator[Server]:
    yield from serve(reactor, FakeApi())


def test_the_document_is_served_without_credentials(server: Server) -> None:
    r = server.request("GET", "/openapi.json", token=None)
    assert r.status == 200
    assert r.json["openapi"] == "3.1.0"
    assert "/v1/calls/{call_id}" in r.json["paths"]
