"""RFC 3327 Path: the registrar keeps the Path of a REGISTER that came through proxies, and
every request sipdial sends to that contact carries it as a preloaded route set and goes to
its first hop — not to the Contact (behind NAT only the proxy reaches it) and not to the
REGISTER's source. Unit tests: SimNet (no sockets, numbers for time) and a real SQLite file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twisted.internet.task import Clock

from sipdial.app import _binding, _record
from sipdial.sip import Peer, Request, Response
from sipdial.store import SqliteStore
from sipdial.store.sqlite import _SQL_MIGRATIONS
from tests.unit.deferreds import result, run_now
from tests.unit.simnet import Phone, SimNet, sdp_answer

EDGE = Peer("udp", "127.0.0.1", 5099)  # the proxy the phone registered through (Path)
PATH = "<sip:127.0.0.1:5099;lr;received=sip:203.0.113.7:40000>"
OUTER = "<sip:127.0.0.3:5096;lr>"


def _started(db: Path) -> SqliteStore:
    store = SqliteStore(str(db), Clock(), run_in_thread=run_now)
    result(store.start())
    return store


def _register_via_proxy(net: SimNet, *, path: list[str], supported: bool,
                        port: int = 5098) -> tuple[Phone, Response]:
    """The REGISTER arrives from ``port`` (a proxy), with Path values added by proxies."""
    phone = Phone(net, port=port, contact_host="10.1.1.1")  # a private, unreachable Contact
    extra = [("Path", p) for p in path]
    if supported:
        extra.append(("Supported", "path"))
    response = phone.register(extra=extra)
    return phone, response


def test_registrar_answers_supported_path_and_echoes_path_when_supported() -> None:
    net = SimNet()
    _phone, ok = _register_via_proxy(net, path=[PATH, OUTER], supported=True)
    assert ok.status == 200
    assert "path" in (ok.headers.get("Supported") or "")
    assert ok.headers.get_all("Path") == [PATH, OUTER]
    (binding,) = net.registrar.contacts("201", net.now)
    assert [str(p) for p in binding.path] == [PATH, OUTER]
    assert binding.next_hop == EDGE  # the first Path hop, not the REGISTER's source
    assert net.api.list_registrations("201")[0]["path"] == [PATH, OUTER]


def test_path_is_kept_but_not_echoed_when_the_ua_does_not_support_it() -> None:
    net = SimNet()
    _phone, ok = _register_via_proxy(net, path=[PATH], supported=False)
    assert ok.status == 200
    assert ok.headers.get_all("Path") == []
    (binding,) = net.registrar.contacts("201", net.now)
    assert [str(p) for p in binding.path] == [PATH]


def test_invite_to_the_phone_goes_through_its_path() -> None:
    net = SimNet()
    phone, _ok = _register_via_proxy(net, path=[PATH, OUTER], supported=False)
    edge = Phone(net, "edge", None, port=EDGE.port, user_agent=None)
    net.clear()
    net.create_call(user="201", to="+4930123")
    invite = edge.take_request("INVITE")  # before: to the REGISTER's source (port 5098)
    assert str(invite.uri) == phone.contact_uri  # R-URI: the registered Contact
    assert invite.headers.get_all("Route") == [PATH, OUTER]
    assert phone.nothing(), phone.pending()
    # the phone answers through the proxy, which did not Record-Route: the dialog's
    # requests still go where the INVITE went (the Path's first hop)
    edge.contact_uri = phone.contact_uri
    edge.reply(invite, 200, to_tag="ph", body=sdp_answer())
    ack = edge.take_request("ACK")
    assert str(ack.uri) == phone.contact_uri
    refer = edge.take_request("REFER")
    assert isinstance(refer, Request)


def test_a_path_naming_another_host_than_the_registers_source_is_not_followed() -> None:
    """A Path is the REGISTER's sender's word: one whose first hop is not the host the
    REGISTER came from (here: a third party) would make every INVITE to the user, and its
    retransmissions, go there. The INVITE goes to the source instead (a proxy routes on by
    the Route header, which still carries the Path)."""
    net = SimNet()
    third = "<sip:203.0.113.9:5060;lr>"
    phone, _ok = _register_via_proxy(net, path=[third], supported=True)
    (binding,) = net.registrar.contacts("201", net.now)
    assert binding.next_hop == Peer("udp", "127.0.0.1", 5098)  # where the REGISTER came from
    net.clear()
    net.create_call(user="201", to="+4930123")
    assert net.sent_to(Peer("udp", "203.0.113.9", 5060)) == []
    invite = phone.take_request("INVITE")
    assert invite.headers.get_all("Route") == [third]


def test_malformed_path_is_answered_400_and_changes_nothing() -> None:
    net = SimNet()
    phone = Phone(net, port=5098, contact_host="10.1.1.1")
    assert phone.register().status == 200
    before = net.registrar.contacts("201", net.now)
    response = phone.register(extra=[("Path", "<sip:127.0.0.1:5099;lr")])
    assert response.status == 400
    assert "Path" in response.reason
    after = net.registrar.contacts("201", net.now)
    assert [(b.contact, b.path) for b in after] == [(b.contact, b.path) for b in before]
    response = phone.register(extra=[("Path", "<tel:+4930123>")])
    assert response.status == 400


def test_require_path_is_accepted_on_register() -> None:
    net = SimNet()
    _phone, ok = _register_via_proxy(net, path=[PATH], supported=True, port=5097)
    assert ok.status == 200
    phone = Phone(net, port=5096, contact_host="10.1.1.2")
    response = phone.register(extra=[("Path", PATH), ("Require", "path")])
    assert response.status == 200


def test_persisted_binding_keeps_its_path(tmp_path: Path) -> None:
    net = SimNet()
    _register_via_proxy(net, path=[PATH, OUTER], supported=True)
    (binding,) = net.registrar.contacts("201", net.now)
    db = tmp_path / "sipdial.db"
    store = _started(db)
    store.save_registration(_record(binding))
    result(store.flush())
    (record,) = result(_started(db).load_registrations())  # a new process reads it back
    restored = _binding(record)
    assert [str(p) for p in restored.path] == [PATH, OUTER]
    assert restored.next_hop == EDGE


def test_a_version_2_database_gains_the_path_column(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version (version) VALUES (2)")
    for statement in _SQL_MIGRATIONS[2]:  # what a version 2 database has of its own
        conn.execute(statement)
    conn.execute("""CREATE TABLE registrations (user_id TEXT NOT NULL, contact TEXT NOT NULL,
        instance TEXT, transport TEXT NOT NULL, source_host TEXT NOT NULL,
        source_port INTEGER NOT NULL, expires_at REAL NOT NULL, q REAL NOT NULL,
        user_agent TEXT, call_id TEXT NOT NULL, cseq INTEGER NOT NULL,
        registered_at REAL NOT NULL, PRIMARY KEY (user_id, contact))""")
    conn.execute("INSERT INTO registrations VALUES ('201', 'sip:201@10.1.1.1', NULL, 'udp', "
                 "'127.0.0.1', 5070, 9e9, 1.0, NULL, 'c', 1, 1.0)")
    conn.commit()
    conn.close()
    (record,) = result(_started(db).load_registrations())
    assert record.path == ""
    assert _binding(record).path == ()
