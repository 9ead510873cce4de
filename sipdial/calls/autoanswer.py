"""Which INVITE headers make a user's desk phone answer by itself (intercom / auto-answer).

There is no single standard. RFC 5373 ``Answer-Mode: Auto`` is the standard one but few desk
phones honour it; vendors instead look at ``Call-Info: <uri>;answer-after=N`` (the BroadSoft
convention) or at magic ``Alert-Info`` values. The vendor is recognised from the User-Agent
the phone sent in its REGISTER. Every phone additionally needs auto-answer/intercom allowed
in its own configuration; these headers only ask.

:func:`auto_answer_headers` returns the first matching rule's headers followed by
``Answer-Mode: Auto``. Rules from the configuration file (:func:`rules_from_config`) are put
before :data:`DEFAULT_RULES` by the caller, so they win.

For an unknown (or absent) User-Agent :data:`GENERIC_HEADERS` is used: both the
``Call-Info ... answer-after=0`` and the ``Alert-Info ... info=alert-autoanswer;delay=0``
forms, which between them cover Yealink, Snom, Grandstream, Aastra/Mitel, Gigaset,
Fanvil, AudioCodes, OBi and baresip. Phones that understand neither treat the Alert-Info URL
as an unusable ring tone and just ring, which is the safe failure. ``Alert-Info: Ring Answer``
and ``Auto Answer`` are not in the generic set: they are Polycom/Panasonic-only values that
need a matching phone-side alert class.

Values may contain ``{uri}``, replaced by sipdial's own SIP URI (``local_uri``). The
``Alert-Info`` URI is never fetched when ``info=alert-autoanswer`` is present; it is
``http://127.0.0.1`` so that a phone which does try to fetch a ring tone gets nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_RULES",
    "GENERIC_HEADERS",
    "AutoAnswerRule",
    "auto_answer_headers",
    "rules_from_config",
]


@dataclass(frozen=True, slots=True)
class AutoAnswerRule:
    """Auto-answer headers for the phones whose User-Agent matches ``pattern``."""

    #: short vendor name, for logs ("yealink")
    vendor: str
    #: searched (not matched) against the User-Agent; compiled case-insensitive
    pattern: re.Pattern[str]
    #: (name, value) pairs added to the INVITE in order; "{uri}" -> sipdial's SIP URI
    headers: tuple[tuple[str, str], ...]


_CALL_INFO_0 = ("Call-Info", "<{uri}>;answer-after=0")
_ALERT_AUTOANSWER = ("Alert-Info", "<http://127.0.0.1>;info=alert-autoanswer;delay=0")
_ANSWER_MODE = ("Answer-Mode", "Auto")  # RFC 5373 §2.1

GENERIC_HEADERS: tuple[tuple[str, str], ...] = (_CALL_INFO_0, _ALERT_AUTOANSWER)


def _rule(vendor: str, pattern: str, *headers: tuple[str, str]) -> AutoAnswerRule:
    return AutoAnswerRule(vendor, re.compile(pattern, re.IGNORECASE), tuple(headers))


DEFAULT_RULES: tuple[AutoAnswerRule, ...] = (
    # Yealink ("Yealink SIP-T46S 66.86.0.15", "Yealink W60B ..."). Source: Yealink admin guides
    # (T2/T4/T5 series, "Auto Answer" under distinctive ring tones): auto-answers on
    # Alert-Info "Auto Answer", "info=alert-autoanswer", "answer-after=0" or "Intercom"; the
    # intercom section documents Call-Info "<sip:...>;answer-after=0" taking priority.
    _rule("yealink", r"\byealink\b", _CALL_INFO_0, _ALERT_AUTOANSWER),
    # Polycom / Poly UC software ("PolycomVVX-VVX_411-UA/6.4.3.5018",
    # "PolycomSoundPointIP-SPIP_650-UA/..."). Source: FreePBX paging module default table
    # (useragent "Polycom" -> "Alert-Info: Auto Answer", after its fix removing "info=") and
    # Polycom's Asterisk technical bulletin; needs voIpProt.SIP.alertInfo.x.value =
    # "Auto Answer" mapped to class autoAnswer on the phone.
    _rule("polycom", r"polycom", ("Alert-Info", "Auto Answer")),
    # Snom ("snomD785/10.1.54.13", "snom370-SIP 8.7.5.35"). Source: Snom service wiki
    # "Intercom on Desk Phones" (Alert-Info ...;info=alert-autoanswer;delay=0) and
    # "answer_after_policy" (Call-Info answer-after honoured when the policy allows).
    _rule("snom", r"\bsnom", _CALL_INFO_0, _ALERT_AUTOANSWER),
    # Grandstream ("Grandstream GXP2170 1.0.11.3", "Grandstream GRP2614 ..."). Source: GXP
    # user manuals ("Allow Auto Answer by Call-Info"); newer firmware also accepts the
    # Alert-Info info=alert-autoanswer form.
    _rule("grandstream", r"grandstream", _CALL_INFO_0, _ALERT_AUTOANSWER),
    # Gigaset ("Gigaset N510 IP PRO/42.250.00.000.000", Maxwell desk phones). Source: Gigaset
    # pro wiki "Auto answer / intercom headers": Call-Info <uri>;answer-after=0 (only 0) and
    # Alert-Info info=alert-autoanswer. DECT bases may ring the handset regardless.
    _rule("gigaset", r"gigaset", _CALL_INFO_0, _ALERT_AUTOANSWER),
    # Panasonic ("Panasonic-KX-UT136/01.133 (0080f0e6c1f3)", "Panasonic_KX-HDV130/...").
    # Source: FreePBX paging module default table (useragent "Panasonic" ->
    # "Alert-Info: Intercom"); Call-Info answer-after added for KX-HDV firmware.
    _rule("panasonic", r"panasonic", ("Alert-Info", "Intercom"), _CALL_INFO_0),
    # Cisco small business SPA and 3PCC/MPP CP-xxxx ("Cisco/SPA504G-7.6.2",
    # "Cisco/CP-8841-3PCC-11.3.1", "Linksys/SPA942-6.1.5"). Source: SPA admin guide
    # ("Auto Answer Page": Call-Info answer-after) and FreeSWITCH sip_auto_answer, which
    # sends Call-Info <sip:host>;answer-after=0 and works with SPA phones.
    _rule("cisco", r"\b(?:cisco|linksys)[/-](?:spa|cp)", _CALL_INFO_0),
    # baresip ("baresip v1.0.0 (x86_64/linux)"). Source: baresip src/call.c decodes
    # "answer-after" from Call-Info (and info=alert-autoanswer;delay from Alert-Info).
    _rule("baresip", r"\bbaresip\b", _CALL_INFO_0),
    # Fanvil ("Fanvil X4U 2.12.1"). Source: Fanvil admin guides (intercom: Call-Info
    # answer-after; Alert-Info info=alert-autoanswer), same convention as Yealink.
    _rule("fanvil", r"\bfanvil\b", _CALL_INFO_0, _ALERT_AUTOANSWER),
    # Aastra / Mitel 6700i/6800i ("Aastra 6757i/3.3.1.4305", "Mitel 6867i/5.1.0.1024").
    # Source: Aastra SIP admin guide ("delay" with info=alert-autoanswer in Alert-Info,
    # delay=0 answers at once) and FreePBX paging table (useragent "Mitel" -> Call-Info
    # answer-after=0).
    _rule("aastra-mitel", r"\b(?:aastra|mitel)\b", _ALERT_AUTOANSWER, _CALL_INFO_0),
)

_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9!%*_+`'~.-]+")  # RFC 3261 token


def _check_value(where: str, value: str) -> None:
    if any((ord(ch) < 0x20 and ch != "\t") or ch == "\x7f" for ch in value):
        raise ValueError(f"{where}: control character (CR/LF?) in header value")


def rules_from_config(entries: list[dict[str, object]]) -> tuple[AutoAnswerRule, ...]:
    """Rules from config entries ``{"vendor": str, "match": regex, "headers": {name: value}}``.

    Raises ``ValueError`` naming the entry (index and vendor) and the problem.
    """
    if not isinstance(entries, list):
        raise ValueError("auto-answer rules must be a list of tables")
    rules: list[AutoAnswerRule] = []
    for index, entry in enumerate(entries):
        where = f"auto-answer rule #{index + 1}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a table, got {type(entry).__name__}")
        unknown = sorted(set(entry) - {"vendor", "match", "headers"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
        vendor = entry.get("vendor")
        if not isinstance(vendor, str) or not vendor.strip():
            raise ValueError(f"{where}: 'vendor' must be a non-empty string")
        where = f"{where} ({vendor})"
        match = entry.get("match")
        if not isinstance(match, str) or not match:
            raise ValueError(f"{where}: 'match' must be a non-empty regular expression string")
        try:
            pattern = re.compile(match, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"{where}: invalid 'match' regular expression: {exc}") from None
        headers = entry.get("headers")
        if not isinstance(headers, dict) or not headers:
            raise ValueError(f"{where}: 'headers' must be a non-empty table of name = value")
        pairs: list[tuple[str, str]] = []
        for name, value in headers.items():
            if not isinstance(name, str) or not _HEADER_NAME_RE.fullmatch(name):
                raise ValueError(f"{where}: invalid header name {name!r}")
            if not isinstance(value, str):
                raise ValueError(f"{where}: value of header {name!r} must be a string")
            _check_value(f"{where} header {name!r}", value)
            pairs.append((name, value))
        rules.append(AutoAnswerRule(vendor.strip(), pattern, tuple(pairs)))
    return tuple(rules)


def auto_answer_headers(
    user_agent: str | None,
    *,
    local_uri: str,
    rules: Sequence[AutoAnswerRule] = DEFAULT_RULES,
) -> list[tuple[str, str]]:
    """Headers asking the phone with this User-Agent to answer automatically.

    The first rule whose pattern is found in ``user_agent`` wins; no match (or no
    User-Agent) gives :data:`GENERIC_HEADERS`. ``Answer-Mode: Auto`` (RFC 5373) is appended
    unless the rule already sets Answer-Mode. ``{uri}`` in values becomes ``local_uri``.
    """
    if any(ch in local_uri for ch in "<>\r\n\x00") or not local_uri:
        raise ValueError(f"local_uri is not usable inside <...>: {local_uri!r}")
    chosen = GENERIC_HEADERS
    if user_agent:
        for rule in rules:
            if rule.pattern.search(user_agent):
                chosen = rule.headers
                break
    result = [(name, value.replace("{uri}", local_uri)) for name, value in chosen]
    if not any(name.lower() == "answer-mode" for name, _ in result):
        result.append(_ANSWER_MODE)
    return result
