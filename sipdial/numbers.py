"""Telephone numbers as CRMs store them -> E.164 (sans-IO; ``phonenumbers`` for the rules).

``[numbers]`` in the config describes where sipdial stands (issue 10 §1, ConSol CM/Phone's
customer-group settings, seed 002): ``country`` (calling code, ``"49"``), ``area`` (area
code without the national prefix, ``"211"``), ``base`` (the company's base number,
``"339903"``), ``outside_line`` (what a trunk wants before external numbers, ``"0"``), and
the ``international_prefix`` / ``national_prefix`` of that country (from ``phonenumbers``'
metadata unless set: ``00`` and ``0`` for Germany).

:func:`complete` takes a number as the HTTP layer cleaned it (``+`` and digits, formatting
gone: :func:`sipdial.api.http.normalise_destination`) and gives what routes, events, the
caller ID and the prompt use:

* ``+...`` is international and only checked; ``00...`` (the international prefix) is
  ``+...``; ``0...`` (the national prefix) is completed with the country code. None of
  these is completed any further (ConSol: "not applied to numbers starting with + or 0");
* a local user's id stays that user (an extension, never a public number), and so does a
  number in the company's range (``base``) whose extension is a local user;
* anything else is completed the ConSol way, with country 49, area 211, base 339903:
  ``12``, ``33990312`` and ``21133990312`` all become ``+4921133990312``; without ``base``
  the number is a subscriber number in ``area``; without ``area`` it cannot be completed;
* without ``country`` nothing is completed (the number stays as given, as before
  ``[numbers]`` existed) but ``+`` numbers are still checked.

An impossible number raises :class:`InvalidNumber` saying why (too short, too long,
unknown country code, ...): the API answers ``422 invalid_number``.

:func:`for_route` gives a route the form it asks for (``[[routes]] format``): ``e164`` (the
default), ``national`` (``0211 33990312`` without spaces in the plan's country, else the
international prefix and the E.164 digits), ``dial`` (``outside_line`` + national).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

__all__ = ["InvalidNumber", "NumberFormat", "NumberPlan", "complete", "for_route"]


class NumberFormat(enum.StrEnum):
    """How a route wants the number (``[[routes]] format``)."""

    E164 = "e164"
    NATIONAL = "national"
    DIAL = "dial"


class InvalidNumber(ValueError):
    """A destination that is no possible telephone number; the message says why."""


@dataclass(frozen=True, slots=True)
class NumberPlan:
    """``[numbers]``: where sipdial's users are (see the module docstring)."""

    country: str | None = None  #: calling code, digits ("49"); None: complete nothing
    area: str | None = None  #: area code without the national prefix ("211")
    base: str | None = None  #: the company's base number ("339903")
    outside_line: str = ""  #: prefix for external numbers toward routes with format "dial"
    international_prefix: str | None = None  #: None: the country's (00 for 49)
    national_prefix: str | None = None  #: None: the country's (0 for 49)

    def __post_init__(self) -> None:
        for name in ("country", "area", "base", "international_prefix", "national_prefix"):
            value = getattr(self, name)
            if value is not None and not value.isdigit():
                raise ValueError(f"{name} must be digits, not {value!r}")
        if self.outside_line and not self.outside_line.isdigit():
            raise ValueError(f"outside_line must be digits, not {self.outside_line!r}")
        if self.country is not None:
            if phonenumbers.region_code_for_country_code(int(self.country)) == "ZZ":
                raise ValueError(f"country {self.country} is no calling code")
        elif self.area is not None or self.base is not None:
            raise ValueError("area and base need a country")
        if self.base is not None and self.area is None:
            raise ValueError("base needs an area")

    @property
    def international(self) -> str:
        """The international prefix one dials ("" without a country)."""
        if self.international_prefix is not None:
            return self.international_prefix
        return _metadata_prefixes(self.country)[0]

    def strip_international(self, number: str) -> str | None:
        """``number`` without its international prefix, None if it has none. The country's
        prefix may be a pattern (Korea: 001, 002, 005, 00700, ...), matched as such."""
        if self.international_prefix is not None:
            prefix = self.international_prefix
            return number[len(prefix):] if number.startswith(prefix) else None
        pattern = _international_pattern(self.country)
        if pattern is None:
            return None
        match = pattern.match(number)
        return number[match.end():] if match is not None and match.end() else None

    @property
    def region(self) -> str | None:
        """The country's region code ("DE"), None without a country."""
        if self.country is None:
            return None
        return phonenumbers.region_code_for_country_code(int(self.country))

    @property
    def national(self) -> str:
        """The national (trunk) prefix in use ("" without a country or where none)."""
        if self.national_prefix is not None:
            return self.national_prefix
        return _metadata_prefixes(self.country)[1]


@functools.lru_cache(maxsize=64)
def _international_pattern(country: str | None) -> re.Pattern[str] | None:
    if country is None:
        return None
    region = phonenumbers.region_code_for_country_code(int(country))
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    prefix = metadata.international_prefix if metadata is not None else None
    return re.compile(f"(?:{prefix or '00'})")


def _metadata_prefixes(country: str | None) -> tuple[str, str]:
    if country is None:
        return "", ""
    region = phonenumbers.region_code_for_country_code(int(country))
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        return "00", ""
    international = metadata.international_prefix or "00"
    if not international.isdigit():  # a pattern ("0(?:0|1)"): its preferred form, or 00
        international = metadata.preferred_international_prefix or "00"
    return international, metadata.national_prefix or ""


_WHY: dict[int, str] = {
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "not a possible length for its country",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "a local number only (its area code is missing)",
}


def check_e164(number: str) -> str:
    """``+digits`` checked as a possible number; the canonical E.164 text."""
    try:
        parsed = phonenumbers.parse(number, None)
    except NumberParseException as exc:
        reason = {NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
                  NumberParseException.TOO_SHORT_NSN: "too short",
                  NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
                  NumberParseException.TOO_LONG: "too long"}.get(exc.error_type,
                                                                 "not a telephone number")
        if exc.error_type == NumberParseException.NOT_A_NUMBER and number[1:].isdigit():
            reason = "too short"  # "+49": a country code and nothing after it
        raise InvalidNumber(f"{number}: {reason}") from None
    why = phonenumbers.is_possible_number_with_reason(parsed)
    if why != ValidationResult.IS_POSSIBLE:
        raise InvalidNumber(f"{number}: {_WHY.get(why, 'not a possible number')}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def complete(number: str, plan: NumberPlan, is_local_user: Callable[[str], bool]) -> str:
    """``number`` (``+`` and digits) in E.164, or a local user's id unchanged; see the
    module docstring. :class:`InvalidNumber` if it is no possible number. A number in the
    company's range (``base``) whose extension is a local user is that user."""
    e164 = _complete(number, plan, is_local_user)
    if plan.base is not None and e164.startswith("+"):
        ours = f"+{plan.country}{plan.area}{plan.base}"
        extension = e164[len(ours):]
        if e164.startswith(ours) and extension and is_local_user(extension):
            return extension
    return e164


def _complete(number: str, plan: NumberPlan, is_local_user: Callable[[str], bool]) -> str:
    if number.startswith("+"):
        return check_e164(number)
    if is_local_user(number) or plan.country is None or not number.isdigit():
        return number
    abroad = plan.strip_international(number)
    if abroad is not None:
        return check_e164("+" + abroad)
    national = plan.national
    if national and number.startswith(national):
        return check_e164(f"+{plan.country}{number[len(national):]}")
    if plan.base is None or not national:
        # a whole national number needs no completion: countries without a trunk prefix
        # (Italy's 06..., 3xx mobiles; Spain; Denmark ...) and ten-digit NANP numbers
        whole = _valid_national(number, plan)
        if whole is not None:
            return whole
    if plan.area is None:
        raise InvalidNumber(f"{number}: no area code given and none configured "
                            "([numbers] area) to complete it")
    if plan.base is None:
        return check_e164(f"+{plan.country}{plan.area}{number}")
    if number.startswith(plan.area + plan.base):
        return check_e164(f"+{plan.country}{number}")
    if number.startswith(plan.base):
        return check_e164(f"+{plan.country}{plan.area}{number}")
    return check_e164(f"+{plan.country}{plan.area}{plan.base}{number}")


def _valid_national(number: str, plan: NumberPlan) -> str | None:
    """``number`` as a complete, valid national number of the plan's country (E.164)."""
    try:
        parsed = phonenumbers.parse(number, plan.region)
    except NumberParseException:
        return None
    if parsed.country_code != int(plan.country or 0) or not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def for_route(number: str, form: NumberFormat, plan: NumberPlan) -> str:
    """``number`` (as :func:`complete` made it) in the form a route asks for. Numbers that
    are not E.164 (a local user, no ``[numbers] country``) go as they are."""
    if form is NumberFormat.E164 or not number.startswith("+") or plan.country is None:
        return number
    national = _national(number, plan)
    return plan.outside_line + national if form is NumberFormat.DIAL else national


def _national(number: str, plan: NumberPlan) -> str:
    """The digits one dials from inside the plan's country: the national prefix and the
    national number at home, the international prefix and the E.164 digits abroad."""
    home = f"+{plan.country}"
    if number.startswith(home):
        return plan.national + number[len(home):]
    return plan.international + number[1:]
