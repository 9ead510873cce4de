"""Refuse the published demo secrets on a reachable sipdial.

``config/sipdial.toml`` (and the container config's history) ship API tokens and SIP passwords
that anyone can read in this repository. They are fine while every socket is on loopback; on
any other address they let a stranger place calls, read the call log and register as a user.
:func:`check_demo_secrets` turns that combination into a :class:`ConfigError` at start::

    users[0].password is a demo secret ("secret201") and sip.listen has the non-loopback
    address 0.0.0.0: change it

A listener counts as loopback when its host is a loopback IP address (``127.0.0.0/8``,
``::1``) or the name ``localhost``; wildcards (``0.0.0.0``, ``::``), other addresses and other
host names do not (no name is resolved: this check does no I/O).
"""

from __future__ import annotations

import ipaddress
from typing import Final

from sipdial.config import Config, ConfigError

__all__ = ["DEMO_SECRETS", "check_demo_secrets"]

#: Every API token and user password written in config/sipdial.toml and, before it read its
#: secrets from the environment, docker/sipdial.toml. tests/unit/test_demo_secrets.py checks
#: that the example config holds no secret missing here.
DEMO_SECRETS: Final = frozenset({"admin-secret", "tok-201", "secret201", "secret202"})

_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost."})


def check_demo_secrets(config: Config) -> None:
    """Raise :class:`ConfigError` if a demo secret is configured while any SIP or HTTP listener
    is on a non-loopback address; return ``None`` otherwise.

    The message names the first offending key (users before tokens, in file order), the secret
    (public anyway) and the first non-loopback listener; further offending keys follow in
    parentheses.
    """
    exposed = _first_public_listener(config)
    if exposed is None:
        return
    offenders = _demo_secret_keys(config)
    if not offenders:
        return
    (key, secret), others = offenders[0], offenders[1:]
    where, host = exposed
    message = (
        f'{key} is a demo secret ("{secret}") and {where} has the non-loopback address '
        f"{host}: change it"
    )
    if others:
        message += f" (also {', '.join(k for k, _ in others)})"
    raise ConfigError(message)


def _first_public_listener(config: Config) -> tuple[str, str] | None:
    """``(config key, host)`` of the first listener not on loopback, SIP before HTTP."""
    for addr in config.sip.listen:
        if not _is_loopback(addr.host):
            return "sip.listen", addr.host
    if not _is_loopback(config.http.host):
        return "http.listen", config.http.host
    return None


def _demo_secret_keys(config: Config) -> list[tuple[str, str]]:
    """``(config key, secret)`` for every user password and API token that is a demo secret.

    Keys are named as :mod:`sipdial.config` names them: ``users[1].password``,
    ``api.tokens[0]`` (a token's position, as the token itself is the secret).
    """
    found = [
        (f"users[{i}].password", user.password)
        for i, user in enumerate(config.users.values())
        if user.password in DEMO_SECRETS
    ]
    found += [
        (f"api.tokens[{i}]", token)
        for i, token in enumerate(config.api.tokens)
        if token in DEMO_SECRETS
    ]
    return found


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in _LOOPBACK_NAMES
