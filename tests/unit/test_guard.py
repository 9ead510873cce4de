"""The failed-authentication limiter (sipdial.guard): numbers for time, no I/O."""

from __future__ import annotations

import logging

import pytest

from sipdial.config import ConfigError, parse_config
from sipdial.guard import (
    FailureGuard,
    GuardPolicy,
    Lockout,
    LockoutKind,
    Outcome,
    check_weak_passwords,
    source_key,
)

T0 = 1_000_000.0
ATTACKER = "203.0.113.9"
PHONE = "198.51.100.7"


def fail_until_blocked(guard: FailureGuard, source: str, account: str, now: float) -> int:
    """Fail while allowed; how many failures were counted (bounded)."""
    for n in range(1000):
        if not guard.allows(source, account, now):
            return n
        guard.failed(source, account, now)
    raise AssertionError("never blocked")


def guesses_within(guard: FailureGuard, seconds: float, *, source: str = ATTACKER,
                   accounts: list[str] | None = None) -> int:
    """An ideal guesser: tries again the moment the guard allows it (sources/accounts as
    given, round robin over accounts), for ``seconds``; returns how many passwords were
    checked."""
    names = accounts or ["201"]
    now, checked, i = T0, 0, 0
    while now < T0 + seconds and checked < 100_000:
        account = names[i % len(names)]
        if guard.allows(source, account, now):
            guard.failed(source, account, now)
            checked += 1
            i += 1
            continue
        # jump to the moment the earliest account is allowed again
        now = min(guard.blocked_until(source, a, now) for a in names)
    return checked


def test_backoff_sequence_then_lockout() -> None:
    policy = GuardPolicy()
    assert [policy.delay(n) for n in range(1, 11)] == [
        0, 0, 0, 0, 0, 1.0, 2.0, 4.0, 8.0, policy.lockout_time]
    capped = GuardPolicy(backoff_after=1, lockout_after=30, backoff_max=60.0)
    assert capped.delay(9) == 60.0 and capped.delay(29) == 60.0
    guard = FailureGuard(policy)
    assert fail_until_blocked(guard, ATTACKER, "201", T0) == 6  # 5 free, the 6th blocks 1 s
    assert guard.blocked_until(ATTACKER, "201", T0) == T0 + 1.0
    assert not guard.allows(ATTACKER, "201", T0 + 0.999)
    assert guard.allows(ATTACKER, "201", T0 + 1.0)


def test_lockout_lasts_then_one_more_failure_relocks() -> None:
    guard = FailureGuard(GuardPolicy())
    now = T0
    for _ in range(10):
        now = guard.blocked_until(ATTACKER, "201", now)
        assert guard.allows(ATTACKER, "201", now)
        guard.failed(ATTACKER, "201", now)
    locked_at = now
    assert guard.blocked_until(ATTACKER, "201", now) == locked_at + 900.0
    assert not guard.allows(ATTACKER, "201", locked_at + 899.0)
    assert guard.allows(ATTACKER, "201", locked_at + 900.0)
    guard.failed(ATTACKER, "201", locked_at + 900.0)  # still within forget_after
    assert guard.blocked_until(ATTACKER, "201", locked_at + 900.0) == locked_at + 1800.0


def test_blocked_attempts_are_not_counted_and_do_not_extend() -> None:
    guard = FailureGuard(GuardPolicy())
    fail_until_blocked(guard, ATTACKER, "201", T0)
    until = guard.blocked_until(ATTACKER, "201", T0)
    for _ in range(100):  # the caller does not call failed() while blocked
        assert not guard.allows(ATTACKER, "201", T0 + 0.5)
    assert guard.blocked_until(ATTACKER, "201", T0 + 0.5) == until


def test_counters_expire_after_forget_after() -> None:
    guard = FailureGuard(GuardPolicy(forget_after=3600.0))
    for _ in range(5):
        guard.failed(ATTACKER, "201", T0)
    later = T0 + 3600.0
    guard.failed(ATTACKER, "201", later)  # counts as the first again: no back-off
    assert guard.allows(ATTACKER, "201", later)
    guard.failed(ATTACKER, "201", later + 1)
    assert guard.allows(ATTACKER, "201", later + 1)


def test_per_source_limit_covers_every_account_name_even_unknown_ones() -> None:
    guard = FailureGuard(GuardPolicy())
    for i in range(5):
        guard.failed(ATTACKER, f"no-such-user-{i}", T0)
    guard.failed(ATTACKER, "another", T0)
    assert not guard.allows(ATTACKER, "201", T0)  # the source is backing off
    assert guard.allows(PHONE, "201", T0)  # other sources are not


def test_per_account_limit_across_sources() -> None:
    guard = FailureGuard(GuardPolicy())
    for i in range(6):
        guard.failed(f"203.0.113.{i}", "201", T0)
    assert not guard.allows("192.0.2.1", "201", T0)  # a fresh source, same account
    assert guard.allows("192.0.2.1", "202", T0)


def test_known_good_source_is_not_locked_out_by_guesses_from_elsewhere() -> None:
    guard = FailureGuard(GuardPolicy())
    guard.succeeded(PHONE, "201", T0)
    for i in range(50):
        guard.failed(f"203.0.113.{i}", "201", T0 + 1)  # a distributed guesser
    assert not guard.allows("192.0.2.1", "201", T0 + 2)  # the account is locked for strangers
    assert guard.allows(PHONE, "201", T0 + 2)  # but not for the phone that logged in


def test_known_good_pair_is_still_limited_by_its_own_counter() -> None:
    # a guesser behind the phone's NAT, guessing the phone's own account
    guard = FailureGuard(GuardPolicy())
    guard.succeeded(PHONE, "201", T0)
    assert fail_until_blocked(guard, PHONE, "201", T0 + 1) == 6
    # and its failures lock the shared source for other accounts
    assert not guard.allows(PHONE, "202", T0 + 1)


def test_trust_expires() -> None:
    guard = FailureGuard(GuardPolicy(trust_time=100.0))
    guard.succeeded(PHONE, "201", T0)
    for i in range(20):
        guard.failed(f"203.0.113.{i}", "201", T0 + 101)
    assert not guard.allows(PHONE, "201", T0 + 101)


def test_success_clears_nothing() -> None:
    # a guesser that owns account 202 cannot reset its counter by logging in between guesses
    guard = FailureGuard(GuardPolicy())
    for _ in range(6):
        guard.failed(ATTACKER, "201", T0)
    guard.succeeded(ATTACKER, "202", T0)
    assert not guard.allows(ATTACKER, "201", T0)


def test_one_event_and_one_warning_per_lockout(caplog: pytest.LogCaptureFixture) -> None:
    events: list[Lockout] = []
    guard = FailureGuard(GuardPolicy(), on_lockout=events.append)
    now = T0
    with caplog.at_level(logging.WARNING, logger="sipdial.auth"):
        for _ in range(10):
            now = guard.blocked_until(ATTACKER, "201", now)
            guard.failed(ATTACKER, "201", now)
    kinds = sorted(e.kind for e in events)
    assert kinds == [LockoutKind.ACCOUNT, LockoutKind.SOURCE]  # back-offs are not lockouts
    source_event = next(e for e in events if e.kind is LockoutKind.SOURCE)
    assert (source_event.source, source_event.account, source_event.failures) == (
        ATTACKER, "201", 10)
    assert source_event.until == now + 900.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert any(f"source {ATTACKER} for 900 s after 10 failed attempts" in w for w in warnings)


def test_a_failing_listener_does_not_break_the_check() -> None:
    def boom(_: Lockout) -> None:
        raise RuntimeError("listener bug")

    guard = FailureGuard(GuardPolicy(backoff_after=0, lockout_after=1), on_lockout=boom)
    guard.failed(ATTACKER, "201", T0)
    assert not guard.allows(ATTACKER, "201", T0)


def test_memory_is_bounded_under_a_flood_of_sources_and_names() -> None:
    guard = FailureGuard(GuardPolicy(max_tracked=1000))
    for i in range(20_000):
        source = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        guard.failed(source, f"user{i}", T0)
        guard.succeeded(source, f"user{i}", T0)
    assert len(guard) <= 2000


def test_ipv6_sources_count_per_64() -> None:
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::9")
    assert source_key("2001:db8:1:2::1") != source_key("2001:db8:1:3::1")
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    guard = FailureGuard(GuardPolicy())
    for i in range(6):
        guard.failed(f"2001:db8:1:2::{i + 1:x}", "201", T0)  # rotating addresses in one /64
    assert not guard.allows("2001:db8:1:2::ffff", "999", T0)


def test_ten_minutes_of_guessing_from_one_source_with_the_defaults() -> None:
    """The issue's goal: svcrack must not find a 4-digit password within 10 minutes. With the
    defaults one source gets 10 passwords checked in 10 minutes (5, then back-off 1+2+4+8 s,
    then a 15-minute lockout), and 1 more per 15 minutes after that."""
    ten_minutes = guesses_within(FailureGuard(GuardPolicy()), 600.0)
    assert ten_minutes == 10
    assert ten_minutes < 10_000 / 100  # far below the 4-digit space
    # spreading the guesses over many account names does not help (per-source counter)
    spread = guesses_within(FailureGuard(GuardPolicy()), 600.0,
                            accounts=[str(n) for n in range(100)])
    assert spread == 10
    day = guesses_within(FailureGuard(GuardPolicy()), 86400.0)
    assert day <= 10 + 86400 / 900 + 1


def test_weak_passwords_refused_at_start_naming_the_user() -> None:
    def config(password: str, auth: str = "") -> str:
        return (f'[sip]\nlisten = ["udp:127.0.0.1:5060"]\ndomain = "127.0.0.1"\n'
                f'[http]\nlisten = "127.0.0.1:8080"\n[store]\nurl = "sqlite:///:memory:"\n'
                f'[api]\ntokens = {{ "t" = "*" }}\n'
                f'[[users]]\nid = "201"\npassword = "long-enough-201"\n'
                f'[[users]]\nid = "202"\npassword = "{password}"\n{auth}')

    check_weak_passwords(parse_config(config("Correct-Horse-202")))
    with pytest.raises(ConfigError, match=r'users\[1\]\.password: .*user "202".*digits only'):
        check_weak_passwords(parse_config(config("43214321")))
    with pytest.raises(ConfigError, match=r'user "202".*shorter than 8 characters'):
        check_weak_passwords(parse_config(config("letmein")))
    check_weak_passwords(parse_config(config("4321", "[auth]\nallow_weak_passwords = true\n")))
    with pytest.raises(ConfigError, match="shorter than 20"):
        check_weak_passwords(parse_config(config("Correct-Horse-202",
                                                 "[auth]\nmin_password_length = 20\n")))


def test_auth_section_figures_and_errors() -> None:
    base = ('[sip]\nlisten = ["udp:127.0.0.1:5060"]\ndomain = "127.0.0.1"\n'
            '[http]\nlisten = "127.0.0.1:8080"\n[store]\nurl = "sqlite:///:memory:"\n'
            '[api]\ntokens = { "t" = "*" }\n')
    config = parse_config(base + "[auth]\nlockout_after = 4\nbackoff_after = 2\n"
                          "lockout_time = 60\n")
    policy = GuardPolicy.from_config(config.auth)
    assert (policy.backoff_after, policy.lockout_after, policy.lockout_time) == (2, 4, 60.0)
    with pytest.raises(ConfigError, match=r"auth\.lockout_after: must be > auth\.backoff_after"):
        parse_config(base + "[auth]\nlockout_after = 3\nbackoff_after = 3\n")
    with pytest.raises(ConfigError, match=r'unknown key "auth\.lockout"'):
        parse_config(base + "[auth]\nlockout = 3\n")


# ------------------------------------------------------------ several workers


def test_workers_count_each_others_failures_and_only_the_locking_one_reports() -> None:
    """``serve --workers 2``: the kernel spreads a guesser's sources (and HTTP connections)
    over the workers; each worker hands its outcomes to the others, so together they allow
    what one process allows, and the lockout is one warning and one event."""
    policy = GuardPolicy(backoff_after=3, lockout_after=4)
    locked: list[tuple[str, Lockout]] = []
    workers: list[FailureGuard] = []

    def make(name: str) -> FailureGuard:
        def tell(outcome: Outcome, src: str, account: str, now: float) -> None:
            for other in workers:
                if other is not guard:
                    other.apply(outcome, src, account, now)
        guard = FailureGuard(policy, lambda lockout: locked.append((name, lockout)), tell)
        return guard

    workers.extend([make("w0"), make("w1")])
    w0, w1 = workers
    for i in range(4):  # alternately at either worker, from one source
        (w0 if i % 2 else w1).failed(ATTACKER, "201", T0 + i)
    assert not w0.allows(ATTACKER, "201", T0 + 5) and not w1.allows(ATTACKER, "201", T0 + 5)
    assert not w0.allows(PHONE, "201", T0 + 5)  # the account is locked everywhere too
    assert [(name, lockout.failures) for name, lockout in locked] == [("w0", 4), ("w0", 4)]
    assert {lockout.kind for _, lockout in locked} == {LockoutKind.SOURCE, LockoutKind.ACCOUNT}


def test_a_trust_won_at_one_worker_counts_at_the_other_and_is_not_retold_each_time() -> None:
    told: list[tuple[Outcome, str, str]] = []
    w0 = FailureGuard(GuardPolicy(backoff_after=3, lockout_after=4),
                      on_outcome=lambda o, src, account, now: told.append((o, src, account)))
    w1 = FailureGuard(GuardPolicy(backoff_after=3, lockout_after=4))
    w0.succeeded(PHONE, "201", T0)
    w0.succeeded(PHONE, "201", T0 + 60)  # a REGISTER refresh: nothing new for the others
    assert told == [(Outcome.TRUSTED, source_key(PHONE), "201")]
    w1.apply(Outcome.TRUSTED, source_key(PHONE), "201", T0)
    # a stranger locks the account at w1; the trusted phone still gets in there
    fail_until_blocked(w1, ATTACKER, "201", T0 + 1)
    assert not w1.allows(ATTACKER, "201", T0 + 2)
    assert w1.allows(PHONE, "201", T0 + 2)


def test_a_lockout_reached_at_two_workers_at_once_is_reported_once() -> None:
    """Both at 3 of 4; a guess at each at the same moment: each crosses 4 only when the
    other's failure arrives (in apply). The worker the key's hash names reports it."""
    import zlib

    policy = GuardPolicy(backoff_after=3, lockout_after=4)
    locked: list[tuple[int, LockoutKind]] = []

    def make(index: int) -> FailureGuard:
        return FailureGuard(
            policy, lambda lockout: locked.append((index, lockout.kind)),
            reports=lambda key: zlib.crc32(key.encode()) % 2 == index)

    w0, w1 = make(0), make(1)
    for i in range(3):  # replicated in step
        w0.failed(ATTACKER, "201", T0 + i)
        w1.apply(Outcome.FAILED, source_key(ATTACKER), "201", T0 + i)
    assert locked == []
    # at once: each counts its own, then the other's
    w0.failed(ATTACKER, "201", T0 + 10)
    w1.failed(ATTACKER, "201", T0 + 10)
    w0.apply(Outcome.FAILED, source_key(ATTACKER), "201", T0 + 10)
    w1.apply(Outcome.FAILED, source_key(ATTACKER), "201", T0 + 10)
    kinds = sorted(kind for _, kind in locked)
    assert kinds == [LockoutKind.ACCOUNT, LockoutKind.SOURCE], locked  # once each
    assert not w0.allows(ATTACKER, "201", T0 + 11) and not w1.allows(ATTACKER, "201", T0 + 11)


def test_trust_is_told_again_before_the_others_trust_runs_out() -> None:
    told: list[float] = []
    policy = GuardPolicy(backoff_after=3, lockout_after=4, trust_time=1000.0)
    guard = FailureGuard(policy, on_outcome=lambda o, src, account, now: told.append(now))
    for t in range(0, 1600, 100):  # a phone re-registering every 100 s
        guard.succeeded(PHONE, "201", T0 + t)
    assert told == [T0, T0 + 500, T0 + 1000, T0 + 1500]
