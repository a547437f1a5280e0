"""Phone numbers as people type them, read with the provider's country code.

`parse_number('089/1234567', 49)` -> '+49891234567'. Accepted: national numbers with the
trunk prefix ('089 1234567', '0170/1111111', '(0 89) 12 34 56-7'), international ones with
'+' or '00' ('+49 89 1234567', '0049 89 1234567'). Parsing and the length/validity checks are
the `phonenumbers` library's (Google's libphonenumber metadata); this module only decides what
is strict enough to store: a number written nationally must be a valid number of the
provider's country, an international one a possible number of its country.
"""

from __future__ import annotations

import re
from typing import Literal

import phonenumbers

__all__ = [
    "DEFAULT_COUNTRY",
    "PhoneError",
    "format_number",
    "parse_number",
    "parse_prefix",
    "valid_country",
]

DEFAULT_COUNTRY = 49
_E164_RE = re.compile(r"\+[1-9][0-9]{1,14}")
_ALLOWED = re.compile(r"[0-9+\s\-/.()]*")
MAX_INPUT = 64


class PhoneError(ValueError):
    """Text that is not a phone number; the message says why."""


def valid_country(code: int) -> int:
    """A country calling code phonenumbers knows (49, 43, 41, 1, ...)."""
    if isinstance(code, bool) or not isinstance(code, int):
        raise PhoneError(f"country code must be a number such as 49, not {code!r}")
    if phonenumbers.region_code_for_country_code(code) == "ZZ":
        raise PhoneError(f"unknown country calling code {code} (e.g. 49 for Germany)")
    return code


def parse_number(text: str, country: int = DEFAULT_COUNTRY) -> str:
    """The E.164 form of `text` typed in the country with calling code `country`.

    Raises PhoneError with a one-line reason for anything else."""
    if not isinstance(text, str):
        raise PhoneError(f"number must be text, not {type(text).__name__}")
    t = text.strip()
    if not t:
        raise PhoneError("number is empty")
    if len(t) > MAX_INPUT or not _ALLOWED.fullmatch(t):
        raise PhoneError(
            f"{text!r} is not a phone number (use digits, spaces, / - ( ) and a leading +)"
        )
    region = phonenumbers.region_code_for_country_code(valid_country(country))
    compact = re.sub(r"[\s\-/.()]", "", t)
    international = compact.startswith(("+", "00"))
    try:
        parsed = phonenumbers.parse(t, region)
    except phonenumbers.NumberParseException:
        raise PhoneError(f"{text!r} is not a phone number") from None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if not _E164_RE.fullmatch(e164):
        raise PhoneError(f"{text!r} is not a phone number")
    if international:
        if not phonenumbers.is_possible_number(parsed):
            raise PhoneError(
                f"{text!r} has the wrong length for a number of +{parsed.country_code}"
            )
    elif not phonenumbers.is_valid_number(parsed):
        raise PhoneError(
            f"{text!r} is not a valid number in +{country} "
            "(write the area code with its 0, e.g. 089 1234567, or +country)"
        )
    return e164


_PREFIX_RE = re.compile(r"\+[1-9][0-9]{1,14}")


def parse_prefix(text: str, country: int = DEFAULT_COUNTRY) -> str:
    """The E.164 start of numbers typed as their beginning: '089' -> '+4989', '0171' ->
    '+49171', '+43' / '0043' -> '+43' (country 49). A national prefix needs its leading 0.

    Raises PhoneError with a one-line reason for anything else."""
    if not isinstance(text, str):
        raise PhoneError(f"number must be text, not {type(text).__name__}")
    t = text.strip()
    if not t:
        raise PhoneError("number is empty")
    if len(t) > MAX_INPUT or not _ALLOWED.fullmatch(t) or "+" in t[1:]:
        raise PhoneError(
            f"{text!r} is not the start of a phone number (use digits, spaces, / - ( ) and a "
            "leading +)"
        )
    compact = re.sub(r"[\s\-/.()]", "", t)
    if compact.startswith("+"):
        e164 = compact
    elif compact.startswith("00"):
        e164 = "+" + compact[2:]
    elif compact.startswith("0"):
        e164 = f"+{valid_country(country)}{compact[1:]}"
    else:
        raise PhoneError(
            f"{text!r}: write the start of the number with its 0 (e.g. 089) or with + and "
            "the country code (e.g. +43)"
        )
    if not _PREFIX_RE.fullmatch(e164):
        raise PhoneError(f"{text!r} is not the start of a phone number")
    return e164


def search_parts(text: str, country: int = DEFAULT_COUNTRY) -> tuple[str, ...]:
    """What of an E.164 number a search for `text` looks for, when `text` is typed like (a
    piece of) a phone number: its digits as typed, and the E.164 start it stands for when it
    starts with +, 00 or the national 0 ('089 1234' -> ('0891234', '+49891234')). Other
    text (letters, or no digit): ()."""
    t = text.strip()
    if len(t) > MAX_INPUT or not _ALLOWED.fullmatch(t) or "+" in t[1:]:
        return ()
    compact = re.sub(r"[\s\-/.()]", "", t)
    digits = compact.lstrip("+")
    if not digits:
        return ()
    if compact.startswith("+"):
        return (compact,)
    if compact.startswith("00"):
        return (digits, "+" + digits[2:]) if len(digits) > 2 else (digits,)
    if compact.startswith("0") and len(digits) > 1:
        return (digits, f"+{country}{digits[1:]}")
    return (digits,)


Style = Literal["national", "international", "e164"]


def format_number(e164: str, style: Style = "national", country: int = DEFAULT_COUNTRY) -> str:
    """'+49891234567' -> '089 1234567' (national, for a number of `country`; other countries'
    numbers are shown internationally), '+49 89 1234567' (international) or the E.164 text."""
    if style == "e164":
        return e164
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    if style == "national" and parsed.country_code == country:
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
