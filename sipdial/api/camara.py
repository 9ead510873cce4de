"""CAMARA ClickToDial (issue 10 §5): the telco API served beside sipdial's own.

``{root}/click-to-dial/v0.1rc1/calls[/{callId}[/recording]]`` (0.1.0-rc.1; ``v0.1`` for
0.1.0, the same contract with 409 ``ALREADY_EXISTS``). Authentication: an ``[api]`` bearer
token. What this module holds is the translation, no I/O: the request body checked into a
:class:`CamaraCall`, sipdial's call resource shown as CAMARA's ``Call``, and sipdial's errors
as CAMARA's ``{status, code, message}`` (:func:`camara_error`). The status and reason
mapping and the CloudEvents are :mod:`sipdial.events.camara`.

The caller: a local user whose ``[[users]] number`` it is (their phones ring), or any other
number, rung first through ``[[routes]]`` (bridge mode) on behalf of the token's user (whose
``[[policy]]`` applies to both numbers; an admin token cannot place those). Recording is not
offered: ``recordingEnabled: true`` is ``422 RECORDING_NOT_SUPPORTED`` and ``GET
.../recording`` is ``404 NOT_FOUND``. The ``sink`` (CloudEvents, ``application/cloudevents+
json``, ``Authorization: Bearer <sinkCredential.accessToken>``) must start with one of
``[camara] sinks`` when a user's token creates the call (any http(s) URL for an admin).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sipdial.api.service import ApiError
from sipdial.events.camara import status_of

__all__ = ["CAMARA_PATH", "CamaraCall", "camara_error", "camara_view", "parse_create"]

#: the versions served: rc.1 (the issue's) and the 0.1.0 release
CAMARA_PATH: Final = r"/click-to-dial/(?P<version>v0\.1rc1|v0\.1)/calls"
_E164: Final = re.compile(r"\+[1-9][0-9]{1,14}")
_CORRELATOR: Final = re.compile(r"[a-zA-Z0-9\-_:;./<>{}]{0,256}")
_FIELDS: Final = frozenset({"caller", "callee", "sink", "sinkCredential", "recordingEnabled"})

#: sipdial's error code -> CAMARA's (by status where no code matches)
#: sipdial's error code -> (CAMARA's status, code); "ACTIVE" is the version's 409 code
_CODES: Final[dict[str, tuple[int, str]]] = {
    "invalid_number": (422, "INVALID_PHONE_NUMBER"),
    "invalid_destination": (422, "INVALID_PHONE_NUMBER"),
    "user_not_registered": (422, "CALLER_NOT_AVAILABLE"),
    "device_not_registered": (422, "CALLER_NOT_AVAILABLE"),
    "media_unavailable": (422, "CALLER_NOT_AVAILABLE"),
    "first_leg_no_route": (422, "CALLER_NOT_AVAILABLE"),
    "first_leg_forbidden": (422, "CALLER_NOT_AVAILABLE"),
    "user_busy": (409, "ACTIVE"),
    "no_route": (422, "CALLEE_NOT_AVAILABLE"),
    "destination_forbidden": (403, "PERMISSION_DENIED"),
    "forbidden_source": (403, "PERMISSION_DENIED"),
    "forbidden": (403, "PERMISSION_DENIED"),
    "invalid_header": (400, "INVALID_ARGUMENT"),
}
#: the 409 of createCall by version: 0.1.0-rc.1 and 0.1.0
_ACTIVE: Final = {"v0.1rc1": "CALL_ALREADY_ACTIVE", "v0.1": "ALREADY_EXISTS"}
_BY_STATUS: Final = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED",
                     403: "PERMISSION_DENIED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
                     409: "CONFLICT", 413: "INVALID_ARGUMENT", 422: "INVALID_ARGUMENT",
                     429: "TOO_MANY_REQUESTS", 500: "INTERNAL", 502: "BAD_GATEWAY",
                     503: "UNAVAILABLE"}


def _bad(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def _unprocessable(code: str, message: str) -> ApiError:
    return ApiError(422, code, message)


def camara_error(status: int, code: str, message: str,
                 version: str = "v0.1rc1") -> dict[str, Any]:
    """sipdial's error (or a CAMARA code already) as CAMARA's ``ErrorInfo``: the status
    follows the code (a 422 code is a 422, INVALID_ARGUMENT a 400)."""
    if not code.isupper():
        status, code = _CODES.get(code) or (status, _BY_STATUS.get(status, "INVALID_ARGUMENT"))
    if code == "ACTIVE":
        code = _ACTIVE.get(version, "CALL_ALREADY_ACTIVE")
    if code == "INVALID_ARGUMENT" and status == 422:
        status = 400
    return {"status": status, "code": code, "message": message}


def valid_correlator(value: str | None) -> str | None:
    """The ``x-correlator`` to echo; 400 if it is not one."""
    if value is None:
        return None
    if _CORRELATOR.fullmatch(value) is None:
        raise _bad("x-correlator: at most 256 of a-z A-Z 0-9 - _ : ; . / < > { }")
    return value


@dataclass(frozen=True, slots=True)
class CamaraCall:
    """A checked ``createCall`` body."""

    caller: str  #: E.164
    callee: str  #: E.164
    sink: str | None = None
    sink_token: str | None = None


def _number(payload: dict[str, Any], name: str) -> str:
    party = payload.get(name)
    if not isinstance(party, dict) or "number" not in party:
        raise _bad(f"{name}.number: is required")
    if set(party) - {"number"}:
        raise _bad(f"{name}: only 'number' is allowed")
    number = party["number"]
    if not isinstance(number, str) or _E164.fullmatch(number) is None:
        raise _unprocessable("INVALID_PHONE_NUMBER",
                             f"{name}.number: not an E.164 number (+ and 2-15 digits)")
    return number


def parse_create(payload: object, check_e164: Callable[[str], object],
                 now: float) -> CamaraCall:
    """``createCall``'s body -> :class:`CamaraCall`; CAMARA's 400/422 otherwise.
    ``check_e164(number)`` raises ValueError for a number no country has."""
    if not isinstance(payload, dict):
        raise _bad("body: must be a JSON object")
    unknown = sorted(set(payload) - _FIELDS)
    if unknown:
        raise _bad(f"{str(unknown[0])[:40]!r}: unknown property")
    caller, callee = _number(payload, "caller"), _number(payload, "callee")
    for name, number in (("caller", caller), ("callee", callee)):
        try:
            check_e164(number)
        except ValueError as exc:
            raise _unprocessable("INVALID_PHONE_NUMBER", f"{name}.number: {exc}") from None
    if caller == callee:
        raise _unprocessable("SAME_CALLER_CALLEE", "caller and callee are the same number")
    recording = payload.get("recordingEnabled", False)
    if not isinstance(recording, bool):
        raise _bad("recordingEnabled: must be true or false")
    if recording:
        raise _unprocessable("RECORDING_NOT_SUPPORTED", "recording is not offered")
    sink = payload.get("sink")
    if sink is not None and (not isinstance(sink, str) or len(sink) > 2048
                             or re.fullmatch(r"https?://[^\s/?#]+\S*", sink) is None):
        raise _bad("sink: must be an http(s) URL")
    token = None
    credential = payload.get("sinkCredential")
    if credential is not None:
        if not isinstance(credential, dict) or credential.get("credentialType") != "ACCESSTOKEN":
            raise _bad('sinkCredential.credentialType: must be "ACCESSTOKEN"')
        token = credential.get("accessToken")
        if (not isinstance(token, str) or not 0 < len(token) <= 4096
                or re.fullmatch(r"[\x21-\x7e]+", token) is None):
            raise _bad("sinkCredential.accessToken: must be a token (printable, no spaces)")
        if credential.get("accessTokenType") != "bearer":
            raise _bad('sinkCredential.accessTokenType: must be "bearer"')
        expires = credential.get("accessTokenExpiresUtc")
        try:
            when = datetime.fromisoformat(expires) if isinstance(expires, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise _bad("sinkCredential.accessTokenExpiresUtc: must be an RFC 3339 date-time "
                       "with a time zone")
        if when.timestamp() <= now:
            raise _bad("sinkCredential.accessTokenExpiresUtc: the token has expired")
        if sink is None:
            raise _bad("sinkCredential: given without a sink")
    return CamaraCall(caller, callee, sink, token)


def camara_view(resource: dict[str, Any], caller: str | None) -> dict[str, Any]:
    """sipdial's call resource as CAMARA's ``Call``."""
    events = resource.get("events") or []
    status = status_of(str(resource.get("state")), resource.get("cause"),
                       any(isinstance(e, dict) and e.get("state") == "connected"
                           for e in events))
    return {
        "callId": resource["id"],
        "caller": {"number": caller or ""},
        "callee": {"number": resource.get("to", "")},
        "status": status[0],
        "createdAt": resource.get("created_at"),
        "recordingEnabled": False,
    }
