"""Online password guessing: failed-authentication limits, sans-IO (no clock, no sockets).

One :class:`FailureGuard` serves every place that checks a user's password: REGISTER (401,
:mod:`sipdial.registrar`), calls from the phones (407, :mod:`sipdial.calls.inbound` through
:class:`sipdial.authn.Authenticator`) and the HTTP compatibility URLs' ``auth=user:password``
and Basic credentials (:mod:`sipdial.api.http`). The caller asks :meth:`FailureGuard.allows`
*before* it looks at the password; while that says no, the password is not checked at all and
the answer is exactly the one a wrong password gets (the same status and headers), so a
guesser cannot tell a lockout from a miss, and the right password found during a lockout is
not recognised. After checking, it reports :meth:`~FailureGuard.failed` (a password was
evaluated and was wrong, for a known or an unknown account alike) or
:meth:`~FailureGuard.succeeded`.

Counters (all figures in :class:`GuardPolicy`, ``[auth]`` in the config):

* per **source** (an IPv4 address; an IPv6 /64, which one subscriber usually owns whole) and
  per **account name** (also names that do not exist: a lockout reveals no user). After
  ``backoff_after`` failures each further failure blocks the key for ``backoff_base * 2**k``
  seconds (capped at ``backoff_max``); the ``lockout_after``-th failure locks it for
  ``lockout_time``. A key with no failure for ``forget_after`` seconds is forgotten; until
  then, one more failure after a lockout locks it again at once. Attempts made while blocked
  are not evaluated and change nothing (they neither count nor extend the block).
* **known-good pairs**: a source that authenticated as an account within ``trust_time`` is
  judged for that account by a counter of its own (same figures) instead of the source's and
  the account's. So a stranger guessing an account from elsewhere cannot lock out the real
  phone, nor can a misconfigured phone behind the same NAT; and a guesser sharing the phone's
  address is still limited, by the pair's counter. A new device of a locked-out account
  waits for the lockout to end (or for the operator, told by the log line and the event).

Successes clear nothing: otherwise a guesser could interleave logins to an account it owns,
or ride on the real phone's re-registrations, to reset its counters. Counters of honest
devices age out after ``forget_after``.

With ``serve --workers N`` each worker's guard tells the others every failure and every new
trust (:attr:`FailureGuard.on_outcome`, applied there with :meth:`FailureGuard.apply`): N
workers count like one process; the lockout is logged and published by the worker whose
failure caused it.

Each lockout (not each back-off) is one WARNING line on ``sipdial.auth`` and one call of the
``on_lockout`` listener with a :class:`Lockout` (the app publishes it as the live event
``auth.locked_out``).

Memory: the counters and the trusted pairs live in two LRU tables of at most ``max_tracked``
entries each; every operation is O(1). A flood from many real addresses can evict old
entries (which then start again from zero): SIP nonces are bound to the source
(:class:`sipdial.authn.Authenticator`), so spoofed datagrams cannot get a password
evaluated and create no entries.

:func:`check_weak_passwords` refuses weak SIP passwords at start.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sipdial.config import AuthConfig, Config, ConfigError

__all__ = [
    "FailureGuard",
    "GuardPolicy",
    "Lockout",
    "LockoutKind",
    "OnOutcome",
    "Outcome",
    "check_weak_passwords",
    "source_key",
    "weak_password_reason",
]

log = logging.getLogger("sipdial.auth")


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """The figures; see the module docstring. Times in seconds."""

    backoff_after: int = 5  #: failures allowed before back-off starts
    backoff_base: float = 1.0  #: the first back-off; doubled for each further failure
    backoff_max: float = 60.0  #: the longest back-off
    lockout_after: int = 10  #: the failure that locks the key out
    lockout_time: float = 900.0  #: how long a lockout lasts
    forget_after: float = 3600.0  #: a key with no failure for this long starts from zero
    trust_time: float = 86400.0  #: how long a successful (source, account) pair stays trusted
    max_tracked: int = 100_000  #: entries per table (counters; trusted pairs)

    def __post_init__(self) -> None:
        if not 0 <= self.backoff_after < self.lockout_after:
            raise ValueError("need 0 <= backoff_after < lockout_after")
        if min(self.backoff_base, self.backoff_max, self.lockout_time, self.forget_after) <= 0:
            raise ValueError("back-off, lockout and forget times must be > 0")
        if self.trust_time < 0 or self.max_tracked < 1:
            raise ValueError("need trust_time >= 0 and max_tracked >= 1")

    @classmethod
    def from_config(cls, auth: AuthConfig) -> GuardPolicy:
        """The figures of ``[auth]``."""
        return cls(backoff_after=auth.backoff_after, backoff_base=auth.backoff_base,
                   backoff_max=auth.backoff_max, lockout_after=auth.lockout_after,
                   lockout_time=auth.lockout_time, forget_after=auth.forget_after,
                   trust_time=auth.trust_time, max_tracked=auth.max_tracked)

    def delay(self, failures: int) -> float:
        """How long the ``failures``-th failure in a row blocks its key (0: not at all)."""
        if failures >= self.lockout_after:
            return self.lockout_time
        if failures <= self.backoff_after:
            return 0.0
        exponent = min(failures - self.backoff_after - 1, 62)
        return min(self.backoff_max, self.backoff_base * 2.0**exponent)


class Outcome(enum.StrEnum):
    """What :attr:`FailureGuard.on_outcome` tells the other workers."""

    FAILED = "failed"  #: a password was checked and was wrong
    TRUSTED = "trusted"  #: a source proved it holds an account's password


#: on_outcome(outcome, source key, account, now)
OnOutcome = Callable[["Outcome", str, str, float], None]


class LockoutKind(enum.StrEnum):
    """Which counter locked: the source, the account name, or a trusted pair of both."""

    SOURCE = "source"
    ACCOUNT = "account"
    PAIR = "pair"


@dataclass(frozen=True, slots=True)
class Lockout:
    """One lockout, as logged and published (``auth.locked_out``)."""

    kind: LockoutKind
    source: str  #: the source key (IPv4 address or IPv6 /64) of the failure that locked
    account: str  #: the account name that failure tried (may not exist)
    failures: int  #: failures counted on the locked key
    at: float  #: when
    until: float  #: when it ends (unless another lockout extends it)

    def to_json(self) -> dict[str, object]:
        """The fields of the live event ``auth.locked_out`` besides id, event and time."""
        return {"kind": self.kind.value, "source": self.source, "account": self.account,
                "failures": self.failures, "seconds": round(self.until - self.at, 3)}


@dataclass(slots=True)
class _Counter:
    failures: int = 0
    last: float = 0.0  #: time of the last counted failure
    until: float = 0.0  #: blocked before this time
    locked: bool = False  #: the block is a lockout (not a back-off)


_Key = tuple[str, ...]


def source_key(host: str) -> str:
    """The counter key of a client address: IPv4 as is, IPv6 as its /64 (an IPv4-mapped
    IPv6 address as the IPv4 address); anything else (a name) as given."""
    try:
        address = ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailureGuard:
    """Failed-authentication limits per source, per account and per trusted pair.

    ``source`` arguments are client addresses (mapped with :func:`source_key`); ``now`` is
    any clock in seconds, the same for every call.
    """

    def __init__(self, policy: GuardPolicy | None = None,
                 on_lockout: Callable[[Lockout], None] | None = None,
                 on_outcome: OnOutcome | None = None,
                 reports: Callable[[str], bool] | None = None) -> None:
        self.policy = policy or GuardPolicy()
        self._on_lockout = on_lockout
        #: with workers: whether this worker logs and publishes the lockout of a key (by
        #: the key's text; exactly one worker does, whether the failure that locked it was
        #: its own or another's). None: every lockout reached here by a local failure.
        self._reports = reports
        self._told: OrderedDict[tuple[str, str], float] = OrderedDict()  # trust last told
        #: with workers: every failure, and every trust that is new or half used up, goes
        #: to the other workers (their :meth:`apply`), so N workers count like one process
        self.on_outcome = on_outcome
        self._counters: OrderedDict[_Key, _Counter] = OrderedDict()
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()

    # ------------------------------------------------------------ queries

    def allows(self, source: str, account: str, now: float) -> bool:
        """Whether a password from ``source`` for ``account`` may be checked now."""
        src = source_key(source)
        if self._is_trusted(src, account, now):
            return not self._blocked(("p", src, account), now)
        return not (self._blocked(("s", src), now) or self._blocked(("a", account), now))

    def blocked_until(self, source: str, account: str, now: float) -> float:
        """When :meth:`allows` will say yes again (``now`` or earlier if it does now)."""
        src = source_key(source)
        keys: tuple[_Key, ...] = (
            (("p", src, account),) if self._is_trusted(src, account, now)
            else (("s", src), ("a", account)))
        return max([now, *(self._until(key, now) for key in keys)])

    def __len__(self) -> int:
        """Entries held (counters and trusted pairs): what memory grows with."""
        return len(self._counters) + len(self._trusted)

    # ------------------------------------------------------------ outcomes

    def failed(self, source: str, account: str, now: float) -> None:
        """A password from ``source`` for ``account`` was checked and was wrong."""
        src = source_key(source)
        self._failed(src, account, now, report=True)
        if self.on_outcome is not None:
            self.on_outcome(Outcome.FAILED, src, account, now)

    def succeeded(self, source: str, account: str, now: float) -> None:
        """``source`` proved it holds ``account``'s password: trust the pair."""
        src = source_key(source)
        self._trust(src, account, now)
        if self.on_outcome is None:
            return
        # told to the others when new or last told half a trust time ago: not for every
        # REGISTER refresh, and yet before the others' trust runs out
        pair = (src, account)
        told = self._told.get(pair)
        if told is None or now - told >= self.policy.trust_time / 2:
            self._told[pair] = now
            self._told.move_to_end(pair)
            while len(self._told) > self.policy.max_tracked:
                self._told.popitem(last=False)
            self.on_outcome(Outcome.TRUSTED, src, account, now)

    def apply(self, outcome: Outcome, src: str, account: str, now: float) -> None:
        """Another worker's outcome (``src`` is already a :func:`source_key`): counted and
        trusted here alike; a lockout it causes is that worker's to log and publish."""
        if outcome is Outcome.FAILED:
            self._failed(src, account, now, report=self._reports is not None)
        else:
            self._trust(src, account, now)

    # ------------------------------------------------------------ internals

    def _failed(self, src: str, account: str, now: float, *, report: bool) -> None:
        self._count(("s", src), LockoutKind.SOURCE, src, account, now, report)
        self._count(("a", account), LockoutKind.ACCOUNT, src, account, now, report)
        if self._is_trusted(src, account, now):
            self._count(("p", src, account), LockoutKind.PAIR, src, account, now, report)

    def _trust(self, src: str, account: str, now: float) -> None:
        pair = (src, account)
        self._trusted[pair] = max(self._trusted.get(pair, 0.0), now + self.policy.trust_time)
        self._trusted.move_to_end(pair)
        while len(self._trusted) > self.policy.max_tracked:
            self._trusted.popitem(last=False)

    def _is_trusted(self, src: str, account: str, now: float) -> bool:
        until = self._trusted.get((src, account))
        return until is not None and now < until

    def _blocked(self, key: _Key, now: float) -> bool:
        counter = self._counters.get(key)
        return counter is not None and now < counter.until

    def _until(self, key: _Key, now: float) -> float:
        counter = self._counters.get(key)
        return counter.until if counter is not None else now

    def _count(self, key: _Key, kind: LockoutKind, src: str, account: str, now: float,
               report: bool) -> None:
        policy = self.policy
        counter = self._counters.get(key)
        if counter is None or (now - counter.last >= policy.forget_after
                               and now >= counter.until):
            counter = _Counter()
            self._counters[key] = counter
        self._counters.move_to_end(key)
        while len(self._counters) > policy.max_tracked:
            self._counters.popitem(last=False)
        was_locked = counter.locked and now < counter.until
        counter.failures += 1
        counter.last = now
        delay = policy.delay(counter.failures)
        if delay <= 0:
            return
        counter.until = max(counter.until, now + delay)
        if counter.failures < policy.lockout_after:
            return
        counter.locked = True
        if was_locked or not report:
            return
        if self._reports is not None and not self._reports("|".join(key)):
            return  # another worker reports this key's lockouts
        lockout = Lockout(kind, src, account, counter.failures, now, counter.until)
        log.warning("authentication locked out: %s %s for %.0f s after %d failed attempts "
                    "(the last from %s as %r)", kind.value, _subject(lockout),
                    counter.until - now, counter.failures, src, account)
        if self._on_lockout is not None:
            try:
                self._on_lockout(lockout)
            except Exception:
                log.exception("lockout listener failed")


def _subject(lockout: Lockout) -> str:
    if lockout.kind is LockoutKind.SOURCE:
        return lockout.source
    if lockout.kind is LockoutKind.ACCOUNT:
        return repr(lockout.account)
    return f"{lockout.source} as {lockout.account!r}"


# --------------------------------------------------------------------------------------------
# Weak passwords, refused at start


def weak_password_reason(password: str, min_length: int) -> str | None:
    """Why ``password`` is too weak to face online guessing, or None."""
    if len(password) < min_length:
        return f"shorter than {min_length} characters"
    if password.isdigit():
        return "digits only"
    return None


def check_weak_passwords(config: Config) -> None:
    """Raise :class:`ConfigError` naming the first user whose SIP password is shorter than
    ``auth.min_password_length`` or digits only, unless ``auth.allow_weak_passwords``.
    A user without a password (PBX mode: the PBX authenticates its phones; the config
    allows it only with ``[upstream]``) has nothing to guess and is skipped."""
    auth = config.auth
    if auth.allow_weak_passwords:
        return
    for index, user in enumerate(config.users.values()):
        if user.password is None:
            continue
        reason = weak_password_reason(user.password, auth.min_password_length)
        if reason is not None:
            raise ConfigError(
                f'users[{index}].password: the password of user "{user.id}" is weak ({reason}): '
                "online guessing would find it; use a longer one with letters, or set "
                "auth.allow_weak_passwords = true")
