"""Reloading the configuration (issue 10 §7: SIGHUP / ``sipdial reload``) at the core: what
changes for the next call, what a call in progress keeps, what needs a restart. The live
signal path is in tests/integration/test_reload_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipdial.app import RESTART_ONLY, check_config
from sipdial.calls import CallRefused, Refusal
from sipdial.config import Config, ConfigError, parse_config
from sipdial.sip import Peer
from tests.unit.simnet import BASE_CONFIG, Phone, SimNet, make_config

BASE = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                          target_answer_timeout=60.0, refer_timeout=32.0, max_concurrent=10)


def reloaded(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def test_a_new_user_can_register_and_call_a_removed_ones_registrations_go() -> None:
    net = SimNet(parse_config(BASE))
    bob = Phone(net, "202", "secret202", port=5072)
    assert bob.register().status == 200
    assert len(net.registrar.contacts("202", net.now)) == 1
    assert Phone(net, "203", "secret203", port=5073).register().status == 401  # unknown

    config = parse_config(reloaded('[[users]]\nid = "202"\npassword = "secret202"\nname = "Bob"\n',
                                   '[[users]]\nid = "203"\npassword = "secret203"\n'))
    assert net.core.reconfigure(config) == ()
    assert net.registrar.contacts("202", net.now) == []  # removed user: unregistered
    assert ("202", bob.contact_uri, True) in net.changes  # and out of the store
    assert Phone(net, "203", "secret203", port=5074).register().status == 200
    with pytest.raises(CallRefused) as refused:
        net.create_call(user="202", to="+4930123456")
    assert refused.value.refusal is Refusal.UNKNOWN_USER
    assert net.create_call(user="203", to="+4930123456").user == "203"


def test_routes_and_numbers_apply_to_the_next_call() -> None:
    net = SimNet(parse_config(BASE))
    alice = Phone(net, "201", "secret201", port=5071)
    alice.register()
    first = net.create_call(user="201", to="+4930123456")
    config = parse_config(reloaded('uri = "sip:{number}@127.0.0.1:5080"',
                                   'uri = "sip:{number}@127.0.0.1:5090"')
                          + '\n[numbers]\ncountry = "49"\narea = "30"\n')
    net.core.reconfigure(config)
    second = net.create_call(user="201", to="123456")
    assert second.to == "+4930123456"  # [numbers] now completes it
    assert net.core.router.route(net.core.router.destination("+4930123456"), net.now)[0] \
        .peer == Peer("udp", "127.0.0.1", 5090)  # type: ignore[index,union-attr]
    assert first.state != "ended"  # the call in progress goes on


def test_a_call_in_progress_keeps_its_settings_new_calls_take_the_new_ones() -> None:
    net = SimNet(parse_config(BASE))
    Phone(net, "201", "secret201", port=5071).register()
    running = net.calls.calls
    record = net.create_call(user="201", to="+4930123456")
    old_env = running[record.id].env
    config = parse_config(reloaded("user_answer_timeout = 30.0", "user_answer_timeout = 5.0"))
    net.core.reconfigure(config)
    assert running[record.id].env is old_env and old_env.config.user_answer_timeout == 30.0
    assert net.calls.env.config.user_answer_timeout == 5.0
    assert net.calls.env.bridges is old_env.bridges  # one set of bridges for all calls


def test_changed_policy_applies_unchanged_policy_keeps_counting() -> None:
    capped = BASE + '\n[[policy]]\nmax_per_minute = 1\n'
    net = SimNet(parse_config(capped))
    Phone(net, "201", "secret201", port=5071).register()
    net.create_call(user="201", to="+4930123456")
    policy = net.calls.policy
    net.core.reconfigure(parse_config(capped))
    assert net.calls.policy is policy  # same rules: the minute's count stands
    with pytest.raises(CallRefused) as refused:
        net.create_call(user="201", to="+4930123457")
    assert refused.value.refusal is Refusal.RATE_LIMITED
    # a deny entry added before it: the capped entry moves, and keeps its count
    net.core.reconfigure(parse_config(BASE + '\n[[policy]]\ndeny = ["^\\\\+4930"]\n'
                                      '\n[[policy]]\nmax_per_minute = 1\n'))
    with pytest.raises(CallRefused) as refused:
        net.create_call(user="201", to="+4930123458")
    assert refused.value.refusal is Refusal.DESTINATION_FORBIDDEN
    with pytest.raises(CallRefused) as refused:
        net.create_call(user="201", to="+4940123458")
    assert refused.value.refusal is Refusal.RATE_LIMITED
    # changed (now 2 a minute): counts afresh
    net.core.reconfigure(parse_config(BASE + '\n[[policy]]\nmax_per_minute = 2\n'))
    assert net.create_call(user="201", to="+4940123459").user == "201"


@pytest.mark.parametrize(("old", "new", "section"), [
    ('listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]',
     'listen = ["udp:127.0.0.1:5062"]', "sip"),
    ('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:8081"', "http.listen"),
    ('url = "sqlite:///:memory:"', 'url = "sqlite:///other.db"', "store"),
    ('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:8080"\nsecure_cookies = true',
     "http.secure_cookies"),
])
def test_what_needs_a_restart_is_named_and_kept(old: str, new: str, section: str) -> None:
    assert section in RESTART_ONLY
    net = SimNet(parse_config(BASE))
    config: Config = parse_config(reloaded(old, new))
    assert net.core.reconfigure(config) == (section,)
    assert net.core.config.sip == make_config().sip or section != "sip"
    assert net.core.config.http.port == 8080
    assert net.core.config.store.url == "sqlite:///:memory:"
    assert not net.core.config.http.secure_cookies


def test_a_reload_does_not_read_the_phonebook_file(tmp_path: Path) -> None:
    """[contacts] is restart-only: a reload names it and reads no file (up to 16 MiB, on the
    reactor thread) — not even one that is no phonebook; a start would refuse that one."""
    net = SimNet(parse_config(BASE))
    book = tmp_path / "book.csv"
    book.write_text("no header row here\n")
    config = parse_config(BASE + f'\n[contacts]\nphonebook = "{book}"\n')
    assert net.core.reconfigure(config) == ("contacts",)
    with pytest.raises(ConfigError, match=r"contacts\.phonebook"):
        check_config(config)


def test_a_reload_that_fails_a_start_check_changes_nothing() -> None:
    net = SimNet(parse_config(BASE))
    assert Phone(net, "202", "secret202", port=5072).register().status == 200
    bad = reloaded('[[users]]\nid = "202"\npassword = "secret202"\nname = "Bob"\n', "") + (
        '\n[[auto_answer]]\nvendor = " "\nmatch = "x"\nheaders = { "Alert-Info" = "a" }\n')
    with pytest.raises(ConfigError, match="auto_answer"):
        net.core.reconfigure(parse_config(bad))
    assert "202" in net.core.users and len(net.registrar.contacts("202", net.now)) == 1
    assert net.core.config.users.keys() == {"201", "202"}


def test_workers_split_policy_caps_without_exceeding_them() -> None:
    from sipdial.app import _worker_share
    from sipdial.worker_role import WorkerRole

    config = parse_config(BASE + '\n[[policy]]\nmax_per_minute = 3\nmax_concurrent = 1\n')
    parts = [_worker_share(config, WorkerRole(index=i, count=2, mesh_dir="/tmp", secret=b"s"))
             .policy[0] for i in range(2)]
    assert [p.max_per_minute for p in parts] == [2, 1]
    assert [p.max_concurrent for p in parts] == [1, 0]
    # a worker whose share is 0 refuses (and says when to retry), it does not crash
    net = SimNet(_worker_share(config, WorkerRole(index=1, count=2, mesh_dir="/tmp",
                                                  secret=b"s")))
    Phone(net, "201", "secret201", port=5071).register()
    with pytest.raises(CallRefused) as refused:
        net.create_call(user="201", to="+4930123456")
    assert refused.value.refusal is Refusal.RATE_LIMITED


def test_calls_in_progress_count_relays_once_in_constant_time() -> None:
    """A shared cap (users = ["*"]) reads every call in progress per request: click-to-dial
    calls plus the phones' relayed calls that no click-to-dial call in progress already
    counts. The running count agrees with counting them one by one at every step."""
    class Relay:  # the one thing the count reads of a relayed call
        def __init__(self, listener: object) -> None:
            self.listener = listener

    net = SimNet(parse_config(BASE))
    assert Phone(net, "201", "secret201", port=5071).register().status == 200
    service = net.core.calls

    def by_hand() -> int:
        return len(service.calls) + sum(service._own_relays(u) for u in service._relays)

    first = net.create_call(user="201", to="+4930123456")
    second = net.create_call(user="201", to="+4930123457")
    c2d = service.calls[first.id]
    referred = [Relay(c2d) for _ in range(2)]
    dialled = Relay(None)
    steps = [lambda: service.relay_started("201", referred[0]),  # type: ignore[arg-type]
             lambda: service.relay_started("201", referred[1]),  # type: ignore[arg-type]
             lambda: service.relay_started("202", dialled),  # type: ignore[arg-type]
             lambda: service.relay_started("202", dialled),  # type: ignore[arg-type]
             lambda: service.relay_ended("201", referred[0]),  # type: ignore[arg-type]
             lambda: service._ended(c2d),  # the REFER call ended: its relay goes on
             lambda: service.relay_ended("201", referred[1]),  # type: ignore[arg-type]
             lambda: service.relay_ended("201", referred[1]),  # type: ignore[arg-type]
             lambda: service.relay_ended("202", dialled)]  # type: ignore[arg-type]
    seen = []
    for step in steps:
        step()
        assert service._in_progress(None) == by_hand()
        seen.append(service._in_progress(None))
    assert seen == [2, 2, 3, 3, 3, 3, 2, 2, 1]
    assert second.id in service.calls
