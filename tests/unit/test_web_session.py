"""The web page's server side (issue 11): its files, sign-in, the session cookie and CSRF.
The page itself in a real browser: tests/integration/test_web_ui.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.selectreactor import SelectReactor

from sipdial.api import Sessions
from sipdial.api.session import SESSION_SECONDS
from tests.unit.test_http_api import FakeApi, Server, call_body, check_password, serve
from tests.unit.test_http_api import reactor as reactor

NOW = [1_800_000_000.0]


@pytest.fixture
def web(reactor: SelectReactor) -> Iterator[Server]:
    sessions = Sessions(b"k" * 32, lambda: NOW[0])
    yield from serve(reactor, FakeApi(), check_password=check_password, sessions=sessions,
                     password_of={"201": "secret"}.get)


def _sign_in(server: Server, **body: str) -> tuple[str, str]:
    r = server.request("POST", "/v1/session", token=None, body=body or
                       {"user": "201", "password": "secret"})
    assert r.status == 201, r.raw
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    return cookie.split(";")[0], r.json["csrf"]


def test_the_page_and_its_files_are_served_with_a_strict_policy(web: Server) -> None:
    page = web.request("GET", "/", token=None)
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b'<script type="module" src="/static/app.js">' in page.raw
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert web.request("GET", "/static/app.js", token=None).headers["Content-Type"] \
        .startswith("text/javascript")
    for bad in ("/static/..%2Fhttp.py", "/static/nope.js", "/static/.hidden"):
        assert web.request("GET", bad, token=None).status == 404, bad


def test_a_session_acts_for_its_user_and_changes_need_the_csrf_token(web: Server) -> None:
    cookie, csrf = _sign_in(web)
    as_browser = {"Cookie": cookie}
    r = web.request("GET", "/v1/session", token=None, headers=as_browser)
    assert (r.status, r.json["user"], r.json["csrf"]) == (200, "201", csrf)
    assert web.request("GET", "/v1/calls", token=None, headers=as_browser).status == 200
    r = web.request("GET", "/v1/calls?user=202", token=None, headers=as_browser)
    assert r.status == 403  # only its own user
    r = web.request("POST", "/v1/calls", token=None, headers=as_browser, body=call_body())
    assert (r.status, r.json["error"]["code"]) == (403, "csrf")
    r = web.request("POST", "/v1/calls", token=None, body=call_body(),
                    headers={**as_browser, "X-CSRF-Token": "0" * 32})
    assert (r.status, r.json["error"]["code"]) == (403, "csrf")
    r = web.request("POST", "/v1/calls", token=None, body=call_body(),
                    headers={**as_browser, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"})
    assert (r.status, r.json["error"]["code"]) == (403, "cross_site")
    r = web.request("POST", "/v1/calls", token=None, body=call_body(),
                    headers={**as_browser, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"})
    assert r.status == 201, r.raw


def test_sign_in_failures_forged_and_expired_sessions(web: Server) -> None:
    r = web.request("POST", "/v1/session", token=None, body={"user": "201", "password": "x"})
    assert r.status == 401 and "Set-Cookie" not in r.headers
    r = web.request("POST", "/v1/session", token=None, body={"token": "nope"})
    assert r.status == 401
    cookie, _csrf = _sign_in(web, token="admin-token")
    assert web.request("GET", "/v1/session", token=None,
                       headers={"Cookie": cookie}).json["user"] is None  # an admin
    forged = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
    assert web.request("GET", "/v1/calls", token=None, headers={"Cookie": forged}).status == 401
    NOW[0] += SESSION_SECONDS + 1
    try:
        assert web.request("GET", "/v1/calls", token=None,
                           headers={"Cookie": cookie}).status == 401
    finally:
        NOW[0] -= SESSION_SECONDS + 1
    out = web.request("DELETE", "/v1/session", token=None, headers={"Cookie": cookie})
    assert "Max-Age=0" in out.headers["Set-Cookie"]
    r = web.request("POST", "/v1/session", token=None, body={"token": "admin-token"},
                    headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status == 403  # no signing in from another site's page


def test_sign_in_takes_only_json_from_this_origin(web: Server) -> None:
    """A form of another site (no CORS for JSON, no Sec-Fetch-Site in old browsers) cannot
    sign a browser in (login CSRF), nor act with a session."""
    r = web.request("POST", "/v1/session", token=None, body='{"token": "admin-token"}',
                    headers={"Content-Type": "text/plain"})
    assert (r.status, r.error_code) == (415, "unsupported_media_type")
    r = web.request("POST", "/v1/session", token=None, body={"token": "admin-token"},
                    headers={"Origin": "http://evil.example"})
    assert (r.status, r.error_code) == (403, "cross_site")
    r = web.request("POST", "/v1/session", token=None, body={"token": "admin-token"},
                    headers={"Origin": "null"})
    assert r.status == 403
    own = f"http://127.0.0.1:{web.port}"
    r = web.request("POST", "/v1/session", token=None, body={"token": "admin-token"},
                    headers={"Origin": own})
    assert r.status == 201
    # behind a proxy that rewrote Host: its X-Forwarded-Host names the public origin
    r = web.request("POST", "/v1/session", token=None, body={"token": "admin-token"},
                    headers={"Origin": "https://dial.example.com",
                             "X-Forwarded-Host": "dial.example.com"})
    assert r.status == 201
    r = web.request("POST", "/v1/session", token=None, body={"token": "admin-token"},
                    headers={"Origin": "https://dial.example.com",
                             "Forwarded": 'for=192.0.2.1;host="dial.example.com";proto=https'})
    assert r.status == 201  # RFC 7239
    cookie, csrf = _sign_in(web)
    r = web.request("POST", "/v1/calls", token=None, body=call_body(),
                    headers={"Cookie": cookie, "X-CSRF-Token": csrf,
                             "Origin": "http://evil.example"})
    assert (r.status, r.error_code) == (403, "cross_site")
    r = web.request("POST", "/v1/calls", token=None, body=call_body(),
                    headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": own})
    assert r.status == 201, r.raw


def test_secure_cookies_are_host_only_and_read_only_by_that_name(
        reactor: SelectReactor) -> None:
    """``[http] secure_cookies`` (TLS ends at a proxy in front): Secure and ``__Host-``, and
    a plain-named cookie (planted by another host of the domain) is not read."""
    sessions = Sessions(b"k" * 32, lambda: NOW[0], secure=True)
    for site in serve(reactor, FakeApi(), check_password=check_password, sessions=sessions,
                      password_of={"201": "secret"}.get):
        r = site.request("POST", "/v1/session", token=None,
                         body={"user": "201", "password": "secret"})
        set_cookie = r.headers["Set-Cookie"]
        assert set_cookie.startswith("__Host-sipdial_session=") and "; Secure" in set_cookie
        assert "Domain" not in set_cookie and "Path=/" in set_cookie
        value = set_cookie.split(";")[0].partition("=")[2]
        assert site.request("GET", "/v1/session", token=None, headers={
            "Cookie": f"__Host-sipdial_session={value}"}).status == 200
        assert site.request("GET", "/v1/session", token=None, headers={
            "Cookie": f"sipdial_session={value}"}).status == 401
        out = site.request("DELETE", "/v1/session", token=None, headers={
            "Cookie": f"__Host-sipdial_session={value}"})
        assert out.headers["Set-Cookie"].startswith("__Host-sipdial_session=;")


# ------------------------------------------------------------------------------- phonebook

@pytest.fixture
def book_site(reactor: SelectReactor, tmp_path: Path) -> Iterator[Server]:
    from sipdial.numbers import NumberPlan
    from sipdial.store import ContactBook

    book = ContactBook(str(tmp_path / "contacts.db"), reactor, lambda: NOW[0])
    yield from serve(reactor, FakeApi(), check_password=check_password,
                     contact_book=book,
                     number_plan=lambda: NumberPlan(country="49", area="30"))


def test_the_phonebook_add_search_change_delete_per_user(book_site: Server) -> None:
    r = book_site.request("POST", "/v1/contacts", token="tok-201",
                          body={"name": "Erika", "numbers": ["030 123456", "+49 171 2345"]})
    assert r.status == 201, r.raw
    erika = r.json["id"]
    assert book_site.request("POST", "/v1/contacts", token="tok-202",
                             body={"name": "Bobs Friend", "numbers": ["12345"]}).status == 201
    shared = book_site.request("POST", "/v1/contacts",
                               body={"name": "Reception", "numbers": ["+4930100"]})
    assert shared.json["owner"] == "*"
    names = [c["name"] for c in book_site.request("GET", "/v1/contacts",
                                                  token="tok-201").json["contacts"]]
    assert names == ["Erika", "Reception"]  # own and everyone's, not 202's
    found = book_site.request("GET", "/v1/contacts?q=4930123456", token="tok-201")
    assert [c["name"] for c in found.json["contacts"]] == ["Erika"]  # by the E.164 form
    for body, code in (({"name": "x", "numbers": []}, "invalid_request"),
                       ({"name": "x", "numbers": ["abc"]}, "invalid_number"),
                       ({"name": "", "numbers": ["1"]}, "invalid_request"),
                       ({"name": "x", "numbers": ["12"], "url": "javascript:x"},
                        "invalid_request"),
                       ({"name": "x", "numbers": ["12"], "owner": "202"}, "forbidden")):
        r = book_site.request("POST", "/v1/contacts", token="tok-201", body=body)
        assert r.json["error"]["code"] == code, (body, r.raw)
    r = book_site.request("PUT", f"/v1/contacts/{erika}", token="tok-202",
                          body={"name": "Mine now", "numbers": ["12"]})
    assert r.status == 404  # not 202's
    r = book_site.request("PUT", f"/v1/contacts/{erika}", token="tok-201",
                          body={"name": "Erika M.", "numbers": ["030 123456"]})
    assert r.status == 200
    assert book_site.request("DELETE", f"/v1/contacts/{erika}", token="tok-201").status == 200
    assert book_site.request("DELETE", f"/v1/contacts/{erika}", token="tok-201").status == 404


def test_csv_and_vcard_imports(book_site: Server) -> None:
    csv = "Name,Telefon,URL\nErika,030 123456,https://crm/c/1\nNo Number,,\nMax,(030) 99,\n"
    r = book_site.request("POST", "/v1/contacts/import", token="tok-201", body=csv,
                          headers={"Content-Type": "text/csv"})
    assert (r.status, r.json) == (201, {"imported": 2, "skipped": 1}), r.raw  # no number
    vcard = "BEGIN:VCARD\r\nFN:Vera\r\nTEL:+4940111\r\nEND:VCARD\r\n"
    r = book_site.request("POST", "/v1/contacts/import", token="tok-201", body=vcard)
    assert r.json["imported"] == 1
    r = book_site.request("POST", "/v1/contacts/import", token="tok-201", body="a,b\n1,2\n")
    assert (r.status, r.json["error"]["code"]) == (422, "invalid_file")
    names = sorted(c["name"] for c in book_site.request(
        "GET", "/v1/contacts", token="tok-201").json["contacts"])
    assert names == ["Erika", "Max", "Vera"]


@pytest.mark.parametrize(("header", "lang"), [
    ("de-DE,de;q=0.9,en;q=0.8", "de"), ("en-US,en;q=0.9,de;q=0.8", "en"),
    ("fr-FR,fr;q=0.9,de;q=0.5", "de"), ("fr, en;q=0.1, de;q=0.2", "de"),
    ("de;q=0, en", "en"), ("", "en"), ("de;q=oops, en", "en"), ("*", "en"),
    (",;=;" * 200, "en"),
])
def test_the_pages_speak_the_browsers_language(header: str, lang: str) -> None:
    from sipdial.api.pages import language
    assert language(header).value == lang


def test_dial_pages_in_german(web: Server) -> None:
    cookie, _csrf = _sign_in(web)
    page = web.request("GET", "/dial?to=tel:+4930123456", token=None,
                       headers={"Accept": "text/html", "Accept-Language": "de-DE,de;q=0.9",
                                "Cookie": cookie})
    assert page.status == 200
    assert b'<html lang="de">' in page.raw and b"Jetzt anrufen" in page.raw


def test_dial_in_the_browser_asks_then_places_with_the_csrf_token(web: Server) -> None:
    html = {"Accept": "text/html"}
    r = web.request("GET", "/dial?to=tel:+4930123456", token=None, headers=html)
    assert r.status == 303  # no session (a tel: link from another site): the page asks
    assert r.headers["Location"] == "/#dial=%2B4930123456"
    cookie, csrf = _sign_in(web)
    browser = {**html, "Cookie": cookie}
    page = web.request("GET", "/dial?to=tel:+4930123456", token=None, headers=browser)
    assert page.status == 200 and b'name="csrf"' in page.raw and csrf.encode() in page.raw
    assert web.api.created == []  # asked, nothing placed
    form = {**browser, "Content-Type": "application/x-www-form-urlencoded"}
    r = web.request("POST", "/dial", token=None, headers=form,
                    body="to=%2B4930123456&csrf=wrong")
    assert r.status == 403 and web.api.created == []
    r = web.request("POST", "/dial", token=None, headers={**form, "Sec-Fetch-Site": "cross-site"},
                    body=f"to=%2B4930123456&csrf={csrf}")
    assert r.status == 403 and web.api.created == []
    r = web.request("POST", "/dial", token=None, headers=form,
                    body=f"to=%2B4930123456&csrf={csrf}")
    assert r.status == 201 and b"Calling" in r.raw
    assert [(c["user"], c["to"]) for c in web.api.created] == [("201", "+4930123456")]


def test_a_session_cookie_places_no_call_through_urls_that_call_on_get(web: Server) -> None:
    """<img src="/dial?to=..."> or a compatibility URL in another page of the same site:
    the browser sends the cookie along, and it must not count there."""
    cookie, _csrf = _sign_in(web)
    for path in ("/dial?to=%2B4930123456", "/call-init.php?user=201&to=4930123456",
                 "/remote_call.htm?user=201&dest=4930123456"):
        r = web.request("GET", path, token=None, headers={"Cookie": cookie})
        assert r.status == 401, (path, r.raw)
    assert web.api.created == []
    r = web.request("GET", "/v1/calls", token=None,
                    headers={"Cookie": cookie, "Sec-Fetch-Site": "same-site"})
    assert r.status == 403  # another origin of the site: not the page's own requests


def test_a_session_ends_when_its_token_or_password_changes(reactor: SelectReactor) -> None:
    passwords = {"201": "secret"}
    sessions = Sessions(b"k" * 32, lambda: NOW[0])
    for server in serve(reactor, FakeApi(), check_password=check_password, sessions=sessions,
                        password_of=passwords.get):
        cookie, _ = _sign_in(server)
        assert server.request("GET", "/v1/calls", token=None,
                              headers={"Cookie": cookie}).status == 200
        passwords["201"] = "changed"
        assert server.request("GET", "/v1/calls", token=None,
                              headers={"Cookie": cookie}).status == 401
        admin, _ = _sign_in(server, token="admin-token")
        assert server.request("GET", "/v1/calls", token=None,
                              headers={"Cookie": admin}).status == 200


def test_a_sessions_request_for_another_workers_call_goes_there_with_the_session(
        reactor: SelectReactor) -> None:
    import json

    from sipdial.api import WorkerReply
    from tests.unit.test_http_api import FakeWorkers

    workers = FakeWorkers()
    call = {"id": "01abc", "user": "201", "state": "connected"}
    workers.replies["DELETE /v1/calls/01abc"] = WorkerReply(200, json.dumps(call).encode())
    sessions = Sessions(b"k" * 32, lambda: NOW[0])
    for server in serve(reactor, FakeApi(), check_password=check_password, sessions=sessions,
                        password_of={"201": "secret"}.get, workers=workers):
        cookie, csrf = _sign_in(server)
        r = server.request("DELETE", "/v1/calls/01abc", token=None,
                           headers={"Cookie": cookie, "X-CSRF-Token": csrf})
        assert r.status == 200, r.raw
        assert workers.extra[-1] == {"Cookie": cookie, "X-CSRF-Token": csrf}


def test_a_callers_number_is_found_by_index_own_contacts_first(reactor: SelectReactor,
                                                               tmp_path: Path) -> None:
    from twisted.internet.threads import blockingCallFromThread

    from sipdial.store import ContactBook

    book = ContactBook(str(tmp_path / "c.contacts.db"), reactor, lambda: NOW[0])

    def call(method: Any, *args: Any) -> Any:
        return blockingCallFromThread(reactor, method, *args)

    shared, = call(book.add, "*", [("Reception", ["030 1"], ["+49301"], None)])
    own, = call(book.add, "201", [("Erika", ["030 1", "0171 2"], ["+49301", "+491712"], None)])
    assert call(book.find_number, "201", "+49301").name == "Erika"  # own first
    assert call(book.find_number, "202", "+49301").name == "Reception"
    assert call(book.find_number, "202", "+491712") is None  # 201's alone
    assert call(book.update, own, "201", "Erika", ["030 3"], ["+49303"], None)
    assert call(book.find_number, "201", "+491712") is None
    assert call(book.find_number, "201", "+49303").name == "Erika"
    assert call(book.delete, shared, None)
    assert call(book.find_number, "202", "+49301") is None


def test_a_phonebook_of_an_earlier_version_gets_its_number_index(reactor: SelectReactor,
                                                                 tmp_path: Path) -> None:
    import sqlite3

    from twisted.internet.threads import blockingCallFromThread

    from sipdial.store import ContactBook

    path = tmp_path / "old.contacts.db"
    with sqlite3.connect(path) as conn:  # as the first web page release wrote it
        conn.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, "
                     "name TEXT NOT NULL, numbers TEXT NOT NULL, keys TEXT NOT NULL, url TEXT, "
                     "updated REAL NOT NULL)")
        conn.execute("INSERT INTO contacts VALUES (7, '201', 'Erika', '[\"030 1\"]', "
                     "' +49301 +491712 ', NULL, 0)")
    book = ContactBook(str(path), reactor, lambda: NOW[0])
    found = blockingCallFromThread(reactor, book.find_number, "201", "+491712")
    assert found is not None and found.id == 7
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)


def test_an_admin_user_signs_in_with_the_sip_password(reactor: SelectReactor) -> None:
    """``[[users]] admin = true``: that account's session is an administrator's — every
    user's calls, the webhook status — for as long as the configuration says so."""
    admins = {"202"}
    sessions = Sessions(b"k" * 32, lambda: NOW[0])
    passwords = {"201": "secret", "202": "secret2"}

    def check(user: str, password: str, client: str = "") -> bool:
        return passwords.get(user) == password

    for site in serve(reactor, FakeApi(), check_password=check, sessions=sessions,
                      password_of=passwords.get, is_admin=admins.__contains__):
        r = site.request("POST", "/v1/session", token=None,
                         body={"user": "202", "password": "secret2"})
        assert (r.status, r.json["user"], r.json["admin"]) == (201, "202", True)
        office = {"Cookie": r.headers["Set-Cookie"].split(";")[0]}
        assert site.request("GET", "/v1/calls?user=201", token=None,
                            headers=office).status == 200
        assert site.request("GET", "/v1/webhooks", token=None, headers=office).status == 200
        r = site.request("POST", "/v1/session", token=None,
                         body={"user": "201", "password": "secret"})
        assert r.json["admin"] is False
        plain = {"Cookie": r.headers["Set-Cookie"].split(";")[0]}
        assert site.request("GET", "/v1/webhooks", token=None, headers=plain).status == 403
        # a CRM's token of that user is that user's, also as a session: no admin rights
        r = site.request("POST", "/v1/session", token=None, body={"token": "tok-202"})
        assert (r.status, r.json["user"], r.json["admin"]) == (201, "202", False)
        crm = {"Cookie": r.headers["Set-Cookie"].split(";")[0]}
        assert site.request("GET", "/v1/webhooks", token=None, headers=crm).status == 403
        assert site.request("GET", "/v1/calls?user=201", token=None, headers=crm).status == 403
        admins.clear()  # a reload took the right away: at once
        assert site.request("GET", "/v1/webhooks", token=None, headers=office).status == 403
        assert site.request("GET", "/v1/session", token=None,
                            headers=office).json["admin"] is False


def test_an_admin_users_new_contacts_are_their_own_unless_they_say_everyones(
        reactor: SelectReactor, tmp_path: Path) -> None:
    from sipdial.numbers import NumberPlan
    from sipdial.store import ContactBook

    sessions = Sessions(b"k" * 32, lambda: NOW[0])
    book = ContactBook(str(tmp_path / "contacts.db"), reactor, lambda: NOW[0])

    def check(user: str, password: str, client: str = "") -> bool:
        return (user, password) == ("202", "secret2")

    for site in serve(reactor, FakeApi(), check_password=check, sessions=sessions,
                      password_of={"202": "secret2"}.get, is_admin={"202"}.__contains__,
                      contact_book=book, number_plan=lambda: NumberPlan(country="49")):
        r = site.request("POST", "/v1/session", token=None,
                         body={"user": "202", "password": "secret2"})
        office = {"Cookie": r.headers["Set-Cookie"].split(";")[0],
                  "X-CSRF-Token": r.json["csrf"]}
        own = site.request("POST", "/v1/contacts", token=None, headers=office,
                           body={"name": "Mine", "numbers": ["+4930111"]})
        shared = site.request("POST", "/v1/contacts", token=None, headers=office,
                              body={"name": "Shared", "numbers": ["+4930222"], "owner": "*"})
        assert (own.json["owner"], shared.json["owner"]) == ("202", "*")
