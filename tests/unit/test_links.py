"""Signed single-use call links and ``/dial`` (issue 10 §4): the token (expiry, single use,
tampering), ``POST /v1/links``, ``/c/<token>`` for programs and browsers, ``GET /dial``.
Live with a phone: tests/integration/test_links_e2e.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from twisted.internet.selectreactor import SelectReactor

from sipdial.api import ApiError, Links, WorkerReply
from sipdial.api.http import _Query
from tests.unit.test_http_api import FakeApi, FakeWorkers, Server, check_password, serve
from tests.unit.test_http_api import reactor as reactor

SECRET = b"a-links-secret-of-32-characters!!"


@dataclass
class UsedStore:
    added: list[tuple[str, float]] = field(default_factory=list)

    def add_used_link(self, nonce: str, expires_at: float) -> None:
        self.added.append((nonce, expires_at))


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make_links(clock: Clock | None = None, store: UsedStore | None = None, *,
               nonce: str = "00aabbcc", secret: bytes = SECRET, one_click: bool = False,
               base_url: str | None = None) -> Links:
    counter = iter(range(1, 10**6))
    return Links(secret, store or UsedStore(), clock or Clock(),
                 lambda: f"{nonce}{next(counter):04x}", max_ttl=7 * 86400, default_ttl=3600,
                 one_click=one_click, base_url=base_url)


# ----------------------------------------------------------------------------- the token


def test_a_token_names_its_call_until_it_expires() -> None:
    clock = Clock()
    links = make_links(clock)
    token, link = links.issue("201", "+4930123456", 600)
    assert links.check(token) == link
    assert (link.user, link.to, link.expires_at) == ("201", "+4930123456", clock.now + 600)
    clock.now += 599
    assert links.check(token) == link
    clock.now += 1
    with pytest.raises(ApiError) as expired:
        links.check(token)
    assert (expired.value.status, expired.value.code) == (410, "link_expired")


def _tampered(token: str) -> list[str]:
    payload, mac = token.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields[2] = "+19005551234"  # another destination, same MAC
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    return [f"{forged}.{mac}", token[:-1], token[:-1] + ("A" if token[-1] != "A" else "B"),
            payload, f"{payload}.", "." + mac, token + "x", "x" * 2000]


def test_a_tampered_truncated_or_foreign_token_is_not_a_link() -> None:
    links = make_links()
    token, _ = links.issue("201", "+4930123456", 600)
    foreign, _ = make_links(secret=b"another-secret-of-32-characters!!").issue(
        "201", "+4930123456", 600)
    for bad in [*_tampered(token), foreign]:
        with pytest.raises(ApiError) as invalid:
            links.check(bad)
        assert (invalid.value.status, invalid.value.code) == (404, "invalid_link"), bad


def test_a_used_link_is_remembered_until_it_expires() -> None:
    clock, store = Clock(), UsedStore()
    links = make_links(clock, store)
    _, link = links.issue("201", "+4930123456", 600)
    assert not links.used(link)
    links.reserve(link)
    assert links.used(link) and store.added == []  # not stored before its call is placed
    links.release(link)
    assert not links.used(link)
    links.reserve(link)
    links.commit(link)
    assert store.added == [(link.nonce, float(link.expires_at))]
    assert links.sweep(clock.now) == 0 and links.used(link)
    clock.now += 600
    assert links.sweep(clock.now) == 1 and not links.used(link)
    # what the store kept is used after a restart
    again = make_links(clock)
    again.load([(link.nonce, clock.now + 10)])
    assert again.used(link)


# ------------------------------------------------------------------------------- HTTP

@pytest.fixture
def linked(reactor: SelectReactor) -> Iterator[Server]:
    yield from serve(reactor, FakeApi(), links=make_links(), check_password=check_password)


def _issue(server: Server, **body: object) -> str:
    r = server.request("POST", "/v1/links", body={"user": "201", "to": "+4930123456", **body})
    assert r.status == 201, r.json
    path = r.json["path"]
    assert r.headers["Location"] == path and path.startswith("/c/")
    return str(path)


def test_post_v1_links_issues_a_link_for_the_tokens_user(linked: Server) -> None:
    r = linked.request("POST", "/v1/links", token="tok-201",
                       body={"user": "201", "to": "030 123456", "ttl": 120})
    assert r.status == 201
    assert (r.json["user"], r.json["to"], r.json["url"]) == ("201", "030123456", None)
    assert r.json["token"] in r.json["path"]
    for body, status, code in (
            ({"user": "202", "to": "1"}, 403, "forbidden"),
            ({"user": "201", "to": "1", "ttl": 59}, 422, "invalid_request"),
            ({"user": "201", "to": "1", "ttl": 7 * 86400 + 1}, 422, "invalid_request"),
            ({"user": "201", "to": "1", "ttl": True}, 422, "invalid_request"),
            ({"user": "201", "to": "1", "mode": "bridge"}, 422, "invalid_request"),
            ({"user": "201", "to": "no number"}, 422, "invalid_destination"),
            ({"to": "1"}, 422, "invalid_request")):
        r = linked.request("POST", "/v1/links", token="tok-201", body=body)
        assert (r.status, r.json["error"]["code"]) == (status, code), body
    r = linked.request("POST", "/v1/links", body={"user": "999", "to": "1"})
    assert (r.status, r.json["error"]["code"]) == (404, "unknown_user")
    assert linked.request("POST", "/v1/links", token=None,
                          body={"user": "201", "to": "1"}).status == 401


def test_the_link_places_one_call_without_credentials(linked: Server) -> None:
    path = _issue(linked)
    info = linked.request("GET", path, token=None)  # what it does: no call yet
    assert info.status == 200 and info.json["used"] is False
    assert linked.api.created == []
    placed = linked.request("POST", path, token=None)
    assert placed.status == 201 and placed.json["id"] == "c1"
    assert placed.headers["Location"] == "/v1/calls/c1"
    assert [(c["user"], c["to"]) for c in linked.api.created] == [("201", "+4930123456")]
    for method in ("POST", "GET"):
        again = linked.request(method, path, token=None)
        assert (again.status, again.json["error"]["code"]) == (410, "link_used")
    assert len(linked.api.created) == 1


def test_a_refused_call_leaves_the_link_usable(linked: Server) -> None:
    path = _issue(linked)
    linked.api.create_error = ApiError(409, "user_not_registered", "no device")
    r = linked.request("POST", path, token=None)
    assert (r.status, r.json["error"]["code"]) == (409, "user_not_registered")
    linked.api.create_error = None
    assert linked.request("POST", path, token=None).status == 201


def test_a_browser_gets_a_page_with_a_button_and_no_framing(linked: Server) -> None:
    path = _issue(linked)
    html = {"Accept": "text/html,application/xhtml+xml"}
    page = linked.request("GET", path, token=None, headers=html)
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    text = page.raw.decode()
    assert '<form method="post">' in text and "+4930123456" in text
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert linked.api.created == []  # a link scanner's GET places nothing
    done = linked.request("POST", path, token=None, headers=html)
    assert done.status == 201 and "Calling" in done.raw.decode()
    used = linked.request("GET", path, token=None, headers=html)
    assert used.status == 410 and "has been used" in used.raw.decode()
    bad = linked.request("GET", path[:-3], token=None, headers=html)
    assert bad.status == 404 and "not valid" in bad.raw.decode()


def test_one_click_links_place_the_call_on_get(reactor: SelectReactor) -> None:
    for server in serve(reactor, FakeApi(), links=make_links(one_click=True,
                                                             base_url="https://sd.example")):
        r = server.request("POST", "/v1/links", body={"user": "201", "to": "+4930123456"})
        assert r.json["url"] == "https://sd.example" + r.json["path"]
        assert server.request("GET", r.json["path"], token=None).status == 201
        assert server.request("GET", r.json["path"], token=None).status == 410


def test_without_links_configured_there_are_none(reactor: SelectReactor) -> None:
    for server in serve(reactor, FakeApi()):
        r = server.request("POST", "/v1/links", body={"user": "201", "to": "1"})
        assert (r.status, r.json["error"]["code"]) == (404, "not_configured")
        assert server.request("GET", "/c/abc.def", token=None).status == 404


def test_a_link_of_another_worker_is_used_there(reactor: SelectReactor) -> None:
    workers = FakeWorkers()
    links = make_links(nonce="01aabb")  # issued by worker 1
    token, _ = links.issue("201", "+4930123456", 600)
    call = {"id": "01c1", "user": "201", "to": "+4930123456", "state": "calling_user"}
    workers.replies[f"POST /c/{token}"] = WorkerReply(201, json.dumps(call).encode())
    for server in serve(reactor, FakeApi(), links=links, workers=workers):
        r = server.request("POST", f"/c/{token}", token=None)
        assert r.status == 201 and r.json["id"] == "01c1"
        assert workers.asked == [(1, "POST", f"/c/{token}", None)]
        assert server.api.created == []  # not placed here


# ------------------------------------------------------------------------------ /dial


def test_dial_places_a_call_from_a_url(linked: Server) -> None:
    r = linked.request("GET", "/dial?to=tel:+49-30-123456&token=tok-201", token=None)
    assert r.status == 201, r.json
    assert linked.api.created[-1]["to"] == "+4930123456"  # "+" kept, unencoded
    r = linked.request("GET", "/dial?to=030123456&auth=201:secret", token=None)
    assert r.status == 201 and linked.api.created[-1]["user"] == "201"
    # no HTTP Basic: a browser would keep it for every page's <img src=/dial?...>
    basic = "Basic " + base64.b64encode(b"201:secret").decode()
    r = linked.request("GET", "/dial?to=030123456", token=None,
                       headers={"Authorization": basic})
    assert r.status == 401 and "Basic" not in r.headers.get("WWW-Authenticate", "")
    r = linked.request("GET", "/dial?to=030123456", token=None)
    assert r.status == 401 and "Basic" not in r.headers.get("WWW-Authenticate", "")
    r = linked.request("GET", "/dial?to=030123456")  # admin token: whose phone?
    assert (r.status, r.json["error"]["code"]) == (422, "invalid_request")
    r = linked.request("GET", "/dial?to=030123456&user=202", token="tok-201")
    assert (r.status, r.json["error"]["code"]) == (403, "forbidden")
    r = linked.request("GET", "/dial?to=030123456&token=nope", token=None)
    assert r.status == 401
    page = linked.request("GET", "/dial?to=030123456&user=202",
                          headers={"Accept": "text/html"})
    assert page.status == 201 and "Calling" in page.raw.decode()


@pytest.mark.parametrize(("raw", "number"), [
    ("+4930", "+4930"), ("tel:+4930", "tel:+4930"), ("callto:+4930", "callto:+4930"),
    ("callto://+4930", "callto://+4930"), ("phone:+49", "phone:+49"),
    ("%2B4930", "+4930"), ("030+123", "030 123"),
])
def test_a_leading_plus_in_a_url_template_is_kept(raw: str, number: str) -> None:
    assert _Query(f"to={raw}".encode()).number("to") == number


def test_pages_escape_what_they_show() -> None:
    from sipdial.api.pages import error_page, link_page, placed_page

    for page in (link_page("201", "<b>x</b>", "t"), placed_page("<i>", "<b>x</b>"),
                 error_page("<script>")):
        text = page.decode()
        assert "<b>x" not in text and "<script>" not in text and "<i>" not in text


def test_a_link_from_before_the_workers_changed_has_one_owner(reactor: SelectReactor) -> None:
    """A nonce naming no current worker (index 0x7f of 3, or a single process's random one)
    is answered by the worker its hash names — the same for every worker."""
    links = make_links(nonce="7faabb")
    token, _link = links.issue("201", "+4930123456", 600)
    owners = set()
    for index in range(3):
        workers = FakeWorkers()
        workers.index = lambda index=index: index  # type: ignore[method-assign]
        workers.others = lambda index=index: [w for w in range(3) if w != index]  # type: ignore[method-assign]
        call = {"id": "c", "user": "201", "to": "+4930123456", "state": "calling_user"}
        workers.replies[f"POST /c/{token}"] = WorkerReply(201, json.dumps(call).encode())
        for server in serve(reactor, FakeApi(), links=links, workers=workers):
            assert server.request("POST", f"/c/{token}", token=None).status in (201, 410, 503)
            owners.add(workers.asked[0][0] if workers.asked else index)
    assert len(owners) == 1
