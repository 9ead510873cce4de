"""Numbers as CRMs store them -> E.164 (sipdial.numbers): the ConSol rule (seed 002), the
country's prefixes, local users, impossible numbers, and the form each route asks for."""

from __future__ import annotations

import pytest

from sipdial.numbers import InvalidNumber, NumberFormat, NumberPlan, complete, for_route

CONSOL = NumberPlan(country="49", area="211", base="339903")
USERS = {"201", "202"}


def done(number: str, plan: NumberPlan = CONSOL) -> str:
    return complete(number, plan, USERS.__contains__)


@pytest.mark.parametrize("typed", ["12", "33990312", "21133990312", "021133990312",
                                   "004921133990312", "+4921133990312"])
def test_the_consol_example_every_form_is_one_number(typed: str) -> None:
    """ConSol CM/Phone: country 49, area 211, base 339903: 12, 33990312 and 21133990312
    all mean +4921133990312; with 0, 00 or + they are complete already."""
    assert done(typed) == "+4921133990312"


def test_plus_zero_and_double_zero_are_not_completed_with_area_or_base() -> None:
    assert done("030123456") == "+4930123456"
    assert done("0044207946000") == "+44207946000"
    assert done("+44207946000") == "+44207946000"


def test_local_users_stay_local_users() -> None:
    assert done("201") == "201"
    # the company's own number of an extension that is a local user: that user
    assert done("339903201") == "201"
    assert done("+49211339903201") == "201"
    assert done("+49211339903299") == "+49211339903299"  # not a user: the public number


def test_without_a_base_a_number_is_a_subscriber_number_in_the_area() -> None:
    plan = NumberPlan(country="49", area="30")
    assert done("123456", plan) == "+4930123456"
    assert done("0211 33990312".replace(" ", ""), plan) == "+4921133990312"


def test_without_an_area_only_prefixed_numbers_complete() -> None:
    plan = NumberPlan(country="49")
    assert done("030123456", plan) == "+4930123456"
    with pytest.raises(InvalidNumber, match="no area code"):
        done("123456", plan)


def test_without_a_plan_numbers_stay_as_given_and_plus_numbers_are_checked() -> None:
    plan = NumberPlan()
    assert done("030123456", plan) == "030123456"
    assert done("4930123", plan) == "4930123"
    assert done("+49 30 123456".replace(" ", ""), plan) == "+4930123456"
    with pytest.raises(InvalidNumber, match="unknown country code"):
        done("+999123456", plan)


@pytest.mark.parametrize("typed, why", [
    ("+491", "too short"),
    ("+999123456", "unknown country code"),
    ("+49301234567890123456", "too long"),
    ("0", "too short"),
])
def test_impossible_numbers_say_why(typed: str, why: str) -> None:
    with pytest.raises(InvalidNumber, match=why):
        done(typed)


def test_other_countries_use_their_own_prefixes() -> None:
    us = NumberPlan(country="1", area="212")
    assert (us.international, us.national) == ("011", "1")
    assert done("5551234", us) == "+12125551234"
    assert done("13105551234", us) == "+13105551234"
    assert done("01144207946000", us) == "+44207946000"
    own = NumberPlan(country="49", international_prefix="000", national_prefix="0")
    assert done("00044207946000", own) == "+44207946000"


def test_a_route_gets_the_form_it_asks_for() -> None:
    plan = NumberPlan(country="49", area="211", base="339903", outside_line="0")
    assert for_route("+4930123456", NumberFormat.E164, plan) == "+4930123456"
    assert for_route("+4930123456", NumberFormat.NATIONAL, plan) == "030123456"
    assert for_route("+4930123456", NumberFormat.DIAL, plan) == "0030123456"
    assert for_route("+44207946000", NumberFormat.NATIONAL, plan) == "0044207946000"
    assert for_route("+44207946000", NumberFormat.DIAL, plan) == "00044207946000"
    assert for_route("201", NumberFormat.DIAL, plan) == "201"  # a local user's id


@pytest.mark.parametrize("kwargs", [
    {"country": "999"}, {"country": "4x"}, {"area": "211"}, {"country": "49", "base": "1"},
    {"country": "49", "outside_line": "9a"},
])
def test_impossible_plans_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        NumberPlan(**kwargs)


def test_countries_without_a_trunk_prefix_and_ten_digit_nanp_numbers() -> None:
    """Italian numbers keep their leading 0 and need no area; a ten-digit US number is
    complete: neither gets the area code put in front (review: both dialled wrong numbers)."""
    italy = NumberPlan(country="39", area="06")
    assert done("0212345678", italy) == "+390212345678"  # Milan from Rome
    assert done("3471234567", italy) == "+393471234567"  # a mobile
    assert done("12345678", italy) == "+390612345678"  # a Rome subscriber number
    us = NumberPlan(country="1", area="212")
    assert done("2125551234", us) == "+12125551234"
    assert done("5551234", us) == "+12125551234"


def test_an_international_prefix_that_is_a_pattern() -> None:
    """Korea dials abroad with 001, 002, 005, 00700 ...: all of them are the prefix."""
    korea = NumberPlan(country="82", area="2")
    for prefix in ("001", "002", "00700"):
        assert done(prefix + "44207946000", korea) == "+44207946000"
