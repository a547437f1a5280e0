"""Moved to `heimbuero.domain.model` (the domain types are a leaf package that both office and
store import). This module only re-exports them for code written against the old place; import
from heimbuero.domain.model instead. It goes away once nothing imports it."""

from heimbuero.domain.model import *  # noqa: F403
