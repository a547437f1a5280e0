"""The location service: where each user's devices can be reached right now.

Bindings live in memory (the proxy looks them up on every call) and are written to the store in
batches by the server; `take_changes()` hands over what changed since the last batch.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

Peer = tuple[str, str, int]  # (transport, host, port) a packet came from or goes to


class Binding:
    """One registered contact of an address-of-record."""

    __slots__ = (
        "aor", "contact", "received", "q", "expires_at", "call_id", "cseq",
        "user_agent", "instance", "reg_id",
    )  # fmt: skip

    def __init__(
        self,
        aor: str,
        contact: str,
        received: Peer,
        expires_at: float,
        call_id: str,
        cseq: int,
        q: float | None = None,
        user_agent: str | None = None,
        instance: str | None = None,
        reg_id: int | None = None,
    ) -> None:
        self.aor = aor
        self.contact = contact
        self.received = received
        self.expires_at = expires_at
        self.call_id = call_id
        self.cseq = cseq
        self.q = q
        self.user_agent = user_agent
        self.instance = instance
        self.reg_id = reg_id

    def __repr__(self) -> str:
        return (
            f"<Binding {self.aor} {self.contact} via {self.received} until {self.expires_at:.0f}>"
        )


class LocationService:
    """Bindings per AOR, their expiry, and the changes not yet persisted."""

    __slots__ = ("_by_aor", "_expiry", "_upserts", "_deletes")

    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, Binding]] = {}
        self._expiry: list[tuple[float, str, str]] = []  # lazy heap: (expires_at, aor, contact)
        self._upserts: dict[tuple[str, str], Binding] = {}
        self._deletes: set[tuple[str, str]] = set()

    # ---- reading -----------------------------------------------------------------------------

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of an AOR, highest q first (then most recently registered)."""
        found = self._by_aor.get(aor)
        if not found:
            return []
        live = [b for b in found.values() if b.expires_at > now]
        if len(live) > 1:
            live.sort(key=lambda b: (-(b.q if b.q is not None else 1.0), -b.expires_at))
        return live

    def get(self, aor: str, contact: str) -> Binding | None:
        found = self._by_aor.get(aor)
        return found.get(contact) if found else None

    def is_registered(self, aor: str, now: float) -> bool:
        found = self._by_aor.get(aor)
        return bool(found) and any(b.expires_at > now for b in found.values())  # type: ignore[union-attr]

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_aor.values())

    def aors(self) -> Iterable[str]:
        return self._by_aor.keys()

    def all_bindings(self) -> Iterable[Binding]:
        for found in self._by_aor.values():
            yield from found.values()

    # ---- writing -----------------------------------------------------------------------------

    def put(self, binding: Binding) -> None:
        key = (binding.aor, binding.contact)
        self._by_aor.setdefault(binding.aor, {})[binding.contact] = binding
        heapq.heappush(self._expiry, (binding.expires_at, binding.aor, binding.contact))
        self._upserts[key] = binding
        self._deletes.discard(key)

    def remove(self, aor: str, contact: str) -> Binding | None:
        found = self._by_aor.get(aor)
        if not found or contact not in found:
            return None
        b = found.pop(contact)
        if not found:
            del self._by_aor[aor]
        key = (aor, contact)
        self._upserts.pop(key, None)
        self._deletes.add(key)
        return b

    def remove_aor(self, aor: str) -> list[Binding]:
        return [b for c in list(self._by_aor.get(aor, {})) if (b := self.remove(aor, c))]

    def load(self, bindings: Iterable[Binding]) -> None:
        """Add bindings read from the store (they are not marked as changed)."""
        for b in bindings:
            self._by_aor.setdefault(b.aor, {})[b.contact] = b
            self._expiry.append((b.expires_at, b.aor, b.contact))
        heapq.heapify(self._expiry)

    def expire(self, now: float) -> list[Binding]:
        """Remove and return every binding whose time is up."""
        gone: list[Binding] = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            at, aor, contact = heapq.heappop(heap)
            b = self.get(aor, contact)
            if b is not None and b.expires_at <= now:
                self.remove(aor, contact)
                gone.append(b)
        return gone

    def next_expiry(self) -> float | None:
        heap = self._expiry
        while heap:
            at, aor, contact = heap[0]
            b = self.get(aor, contact)
            if b is not None and b.expires_at == at:
                return at
            heapq.heappop(heap)  # stale entry: refreshed or removed since
        return None

    def take_changes(self) -> tuple[list[Binding], list[tuple[str, str]]]:
        """Bindings to upsert and (aor, contact) keys to delete since the last call."""
        ups = list(self._upserts.values())
        dels = list(self._deletes)
        self._upserts = {}
        self._deletes = set()
        return ups, dels

    def has_changes(self) -> bool:
        return bool(self._upserts or self._deletes)
