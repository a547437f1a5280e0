"""Flood limits, a ban list, scanner detection and password-guessing back-off, sans-IO.

In the spirit of Kamailio's pike + htable ban: every request costs its source IP one token of a
bucket (`rate` per second, `burst` deep); a source that empties its bucket is banned for
`ban_time` seconds and everything it sends is dropped without an answer. Requests whose
User-Agent names a known scanner (friendly-scanner, sipvicious, ...) are dropped silently.

Password guessing is limited per account and per source, without locking out a phone that
works: after `account_failures` wrong answers for one account, that account refuses further
attempts for a window that doubles with every further failure (up to `backoff_max`), and a source
with `source_failures` wrong answers gets the same treatment for every account. A (source IP,
account) pair that authenticated successfully within `known_pair_time` is exempt from both, so a
flood of wrong passwords neither stops the registered phone refreshing nor the office behind the
same router; the pair loses the exemption after `account_failures` failures of its own.

Every table is bounded by `max_entries` (least recently touched first out) and pruned as it is
used: each new entry drops the oldest ones whose time is over (a refilled bucket, a ban run out,
failures past their window and back-off, a success too old to count), so a flood of distinct
sources costs a fixed amount of memory, never more, and a quiet table empties.

A source is an IPv4 address, or an IPv6 address's /64 (`source_key`): a home or an office gets
a whole /64 and may change its addresses in it at will, so a flood or a guesser that walks
through its prefix is still one source. Log lines name the address itself.

The clock comes in as `now`; nothing here touches a socket or a file.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Guard", "GuardSettings", "peer_text", "security_log_line", "source_key"]

log = logging.getLogger("heimbuero.security")

DEFAULT_SCANNERS = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sip-scan",
    "iwar",
    "sundayddr",
    "pplsip",
    "sipptk",
    "eyebeam-scanner",
)

_K = TypeVar("_K", str, tuple[str, str])
_UNSAFE = re.compile(r"[^\x21-\x7e]")


@dataclass(frozen=True, slots=True)
class GuardSettings:
    rate: float = 100.0  # requests per second and source IP, sustained
    burst: int = 300  # requests a source may send at once before the rate applies
    ban_time: float = 300.0  # seconds a flooding source stays banned
    scanner_user_agents: tuple[str, ...] = DEFAULT_SCANNERS  # case-insensitive substrings
    account_failures: int = 5  # wrong answers for one account before it backs off
    source_failures: int = 30  # wrong answers from one IP (any account) before it backs off
    backoff_base: float = 2.0  # seconds of the first refusal window; doubles each failure
    backoff_max: float = 300.0  # longest refusal window
    failure_window: float = 900.0  # a quiet period this long forgets the failures
    known_pair_time: float = 86400.0  # how long a successful (IP, account) stays exempt
    max_entries: int = 20_000  # per table


class _Failures:
    """Failures of one account, one source or one pair, and the window they earned."""

    __slots__ = ("count", "last", "until")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.until = 0.0


def source_key(ip: str) -> str:
    """What the limits count by: an IPv4 address as it is; an IPv6 address by its /64
    ("2001:db8:1:2::/64"), an IPv4-mapped one as its IPv4 address."""
    return _ipv6_source(ip) if ":" in ip else ip


@functools.lru_cache(maxsize=4096)
def _ipv6_source(ip: str) -> str:
    try:
        address = ipaddress.IPv6Address(ip.split("%", 1)[0].strip("[]"))
    except ValueError:
        return ip  # (not an address: counted as the text it is)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def peer_text(text: str) -> str:
    """Text a peer chose (a user name, a User-Agent), fit for a log line: no spaces, no
    control characters, at most 64 characters; so it cannot forge a second source."""
    return _UNSAFE.sub("?", text[:64]) or "-"


def security_log_line(event: str, source: str, detail: str = "") -> str:
    """The one fixed-format line fail2ban matches: `SECURITY <event> from <ip>: <detail>`.

    The source comes right after "from"; whatever a peer chose goes into `detail` only
    through `peer_text`. Control characters in `detail` are replaced all the same."""
    safe = "".join(c if c.isprintable() else "?" for c in detail[:200])
    return f"SECURITY {event} from {source}: {safe}" if safe else f"SECURITY {event} from {source}"


class Guard:
    """The state of the limits; see the module's docstring."""

    __slots__ = ("settings", "_buckets", "_bans", "_accounts", "_sources", "_pairs", "_known",
                 "_scanners", "stats")  # fmt: skip

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = s = settings or GuardSettings()
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # ip -> [tokens, time]
        self._bans: OrderedDict[str, float] = OrderedDict()  # ip -> banned until
        self._accounts: OrderedDict[str, _Failures] = OrderedDict()
        self._sources: OrderedDict[str, _Failures] = OrderedDict()
        self._pairs: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()  # pair -> last success
        self._scanners = tuple(u.lower() for u in s.scanner_user_agents if u)
        self.stats = {"banned": 0, "dropped_banned": 0, "dropped_scanner": 0, "refused": 0}

    def update(self, settings: GuardSettings) -> None:
        """New limits (a config reload); bans, counts and failures so far are kept."""
        self.settings = settings
        self._scanners = tuple(u.lower() for u in settings.scanner_user_agents if u)

    # ---- floods ------------------------------------------------------------------------------

    def admit(self, ip: str, now: float, exempt: Callable[[], bool] | None = None) -> bool:
        """Count one request from `ip`; False: drop it (banned, or it just used up its rate).
        `exempt()` is asked only when the rate is used up: True lets a trusted peer go on."""
        s = self.settings
        key = _ipv6_source(ip) if ":" in ip else ip  # (source_key, inlined: every request)
        bans = self._bans
        until = bans.get(key)
        if until is not None:
            if until > now:
                self.stats["dropped_banned"] += 1
                return False
            del bans[key]
        if s.rate <= 0:
            return True
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = [float(s.burst), now]
            buckets[key] = bucket
            self._prune_buckets(now)  # (the oldest first: mostly one look at the head)
        else:
            buckets.move_to_end(key)
            tokens = min(float(s.burst), bucket[0] + (now - bucket[1]) * s.rate)
            bucket[0] = tokens
            bucket[1] = now
        if bucket[0] < 1.0:
            if exempt is not None and exempt():
                return True
            self.ban(ip, now, f"more than {s.rate:g} requests per second")
            return False
        bucket[0] -= 1.0
        return True

    def _prune_buckets(self, now: float) -> None:
        s = self.settings
        buckets = self._buckets
        full_after = s.burst / s.rate if s.rate > 0 else 0.0
        # A bucket that has refilled completely says nothing: forget it; else the oldest goes.
        while buckets:
            ip, bucket = next(iter(buckets.items()))
            if len(buckets) <= s.max_entries and now - bucket[1] < full_after:
                break
            del buckets[ip]

    def ban(self, ip: str, now: float, why: str) -> None:
        """Ban `ip`'s source (an IPv6 address: its /64) for `ban_time`."""
        s = self.settings
        if s.ban_time <= 0:
            return
        key = source_key(ip)
        bans = self._bans
        bans[key] = now + s.ban_time
        bans.move_to_end(key)
        self._buckets.pop(key, None)
        while bans and (len(bans) > s.max_entries or next(iter(bans.values())) <= now):
            bans.popitem(last=False)  # over the bound, or a ban that has run out
        self.stats["banned"] += 1
        whom = "" if key == ip else f" (all of {key})"
        log.warning(security_log_line("banned", ip, f"{why}; for {s.ban_time:g}s{whom}"))

    def banned(self, ip: str, now: float) -> bool:
        until = self._bans.get(source_key(ip))
        return until is not None and until > now

    def is_scanner(self, user_agent: str | None) -> bool:
        """Whether a User-Agent names a known scanner (then drop the request unanswered)."""
        if not user_agent or not self._scanners:
            return False
        ua = user_agent.lower()
        return any(word in ua for word in self._scanners)

    def scanner_dropped(self, ip: str, user_agent: str) -> None:
        self.stats["dropped_scanner"] += 1
        log.info(security_log_line("scanner", ip, f"user-agent={peer_text(user_agent)}"))

    # ---- password guessing -------------------------------------------------------------------

    def known_pair(self, ip: str, account: str, now: float) -> bool:
        """`account` authenticated from `ip` recently and has not failed there since."""
        pair = (source_key(ip), account)
        last = self._known.get(pair)
        if last is None:
            return False
        if now - last > self.settings.known_pair_time:
            del self._known[pair]
            return False
        f = self._pairs.get(pair)
        return f is None or f.count < self.settings.account_failures or f.until <= now

    def refusal(self, ip: str, account: str, now: float) -> str | None:
        """Why an authentication attempt for `account` from `ip` is refused now (None: go on)."""
        if self.known_pair(ip, account, now):
            return None
        for table, key in ((self._accounts, account), (self._sources, source_key(ip))):
            f = table.get(key)
            if f is not None and f.until > now:
                self.stats["refused"] += 1
                return "Too many failed authentications, try again later"
        return None

    def failed(self, ip: str, account: str, now: float, reason: str) -> None:
        """A wrong answer (wrong password or unknown user) with a nonce we issued."""
        s = self.settings
        source = source_key(ip)
        self._bump(self._accounts, account, s.account_failures, now)
        self._bump(self._sources, source, s.source_failures, now)
        self._bump(self._pairs, (source, account), s.account_failures, now)
        log.warning(security_log_line("auth-failure", ip, f"user={peer_text(account)} {reason}"))

    def succeeded(self, ip: str, account: str, now: float) -> None:
        pair = (source_key(ip), account)
        known = self._known
        known[pair] = now
        known.move_to_end(pair)
        s = self.settings
        while known and (
            len(known) > s.max_entries or now - next(iter(known.values())) > s.known_pair_time
        ):
            known.popitem(last=False)  # over the bound, or too long ago to count
        # The account's failures stay: they may be someone else's guesses (they fade after
        # `failure_window`); only this pair's own record is cleared.
        self._pairs.pop(pair, None)

    def _bump(self, table: OrderedDict[_K, _Failures], key: _K, limit: int, now: float) -> None:
        s = self.settings
        f = table.get(key)
        if f is None:
            f = _Failures()
            f.last = now  # (so that the pruning below never takes the new key itself)
            table[key] = f
            self._prune(table, now)  # (the oldest first: mostly one look at the head)
        else:
            table.move_to_end(key)
            if now - f.last > s.failure_window:
                f.count = 0
        f.count += 1
        f.last = now
        if limit > 0 and f.count >= limit:
            over = f.count - limit
            window = min(s.backoff_max, s.backoff_base * (2.0 ** min(over, 30)))
            f.until = now + window

    def _prune(self, table: OrderedDict[_K, _Failures], now: float) -> None:
        s = self.settings
        while table:
            key, f = next(iter(table.items()))
            if len(table) <= s.max_entries and (now - f.last <= s.failure_window or f.until > now):
                break
            del table[key]

    def sizes(self) -> dict[str, int]:
        """Entries per table (for metrics and tests)."""
        return {
            "buckets": len(self._buckets),
            "bans": len(self._bans),
            "accounts": len(self._accounts),
            "sources": len(self._sources),
            "pairs": len(self._pairs),
            "known": len(self._known),
        }
