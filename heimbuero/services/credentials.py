"""Who may authenticate: a small cache in front of the user table, so that SIP digest checks on
the hot path rarely touch the database, while `heimbuero user add/passwd/remove` on a running
server take effect within a few seconds."""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Account:
    """What the SIP services need to know of a user."""

    name: str
    role: str
    ha1_md5: str
    ha1_sha256: str
    allow_rfc2069: bool = False  # users.sip_compat {"rfc2069": true}: digests without qop


class UserDirectory:
    """Looks accounts up through `fetch(name)`, caching hits and misses for `ttl` seconds.

    `known()`, when given, is the set of every user name, kept in memory (the office
    directory, reloaded a few seconds after a change). A name not in it is read from the
    database only `miss_rate` times per second (a user added a moment ago); beyond that it
    is no user, answered without a read. So a scanner trying random names costs a bounded
    number of blocking reads on the event loop and no cache entries."""

    __slots__ = ("_fetch", "_ttl", "_cache", "_max", "_inserts", "_known", "_miss_rate",
                 "_tokens", "_tokens_at")  # fmt: skip

    def __init__(
        self,
        fetch: Callable[[str], Account | None],
        ttl: float = 5.0,
        max_entries: int = 200_000,
        known: Callable[[], Container[str]] | None = None,
        miss_rate: float = 20.0,
    ) -> None:
        self._known = known
        self._miss_rate = miss_rate
        self._tokens = miss_rate  # a burst of one second's worth
        self._tokens_at: float | None = None
        self._fetch = fetch
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Account | None]] = {}
        self._max = max_entries
        self._inserts = 0

    def get(self, name: str, now: float) -> Account | None:
        name = name.lower()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        if self._known is not None and name not in self._known() and not self._may_miss(now):
            return None
        account = self._fetch(name)
        cache = self._cache
        self._inserts += 1
        if self._inserts >= 10_000 or len(cache) >= self._max:
            # Entries are only useful for `ttl` seconds: drop the stale ones now and then, so a
            # registration storm leaves no lasting copy of the user table in memory.
            self._inserts = 0
            for key in [k for k, v in cache.items() if v[0] <= now]:
                del cache[key]
            if len(cache) >= self._max:
                cache.clear()
        cache[name] = (now + self._ttl, account)
        return account

    def _may_miss(self, now: float) -> bool:
        """Whether a name the directory does not know may still be read (a token bucket)."""
        if self._tokens_at is not None:
            elapsed = max(0.0, now - self._tokens_at)
            self._tokens = min(self._miss_rate, self._tokens + elapsed * self._miss_rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def allows_rfc2069(self, name: str, now: float) -> bool:
        account = self.get(name, now)
        return account is not None and account.allow_rfc2069

    def ha1(self, name: str, algorithm: str, now: float) -> str | None:
        account = self.get(name, now)
        if account is None:
            return None
        return account.ha1_sha256 if algorithm.upper() == "SHA-256" else account.ha1_md5
