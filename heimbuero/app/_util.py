"""Helpers shared by the handlers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from heimbuero.app.errors import Invalid
from heimbuero.office import accounts, callpolicy, directory

T = TypeVar("T")

VALIDATION_ERRORS = (directory.DirectoryError, accounts.AccountError, callpolicy.PolicyError)


def valid(field: str, fn: Callable[..., T], *args: Any) -> T:
    """Run a validator of office/; its error becomes Invalid naming `field`."""
    try:
        return fn(*args)
    except VALIDATION_ERRORS as exc:
        raise Invalid(field, str(exc)) from None


def country_of(store: Any) -> int:
    """The provider's country calling code: numbers typed without '+' are read with it."""
    return int(store.get_provider().country_code)
