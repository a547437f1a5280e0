"""The location service: where each user's devices can be reached right now.

Bindings live in memory (the proxy looks them up on every call) and are written to the store in
batches by the server; `take_changes()` hands over what changed since the last batch.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from heimbuero.sip.peer import Peer as Peer  # (transport, host, port) a packet came from or goes to


class Binding:
    """One registered contact of an address-of-record."""

    __slots__ = (
        "aor", "contact", "received", "q", "expires_at", "call_id", "cseq",
        "user_agent", "instance", "reg_id", "path",
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
        path: tuple[str, ...] = (),
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
        # RFC 3327: the Path of the REGISTER (edge proxies, nearest to us first); requests to
        # the device carry it as their Route and go to `received`, its first hop.
        self.path = path

    def __repr__(self) -> str:
        return (
            f"<Binding {self.aor} {self.contact} via {self.received} until {self.expires_at:.0f}>"
        )


class LocationService:
    """Bindings per AOR, their expiry, and the changes not yet persisted.

    Memory layout (the registrar holds one entry per registered device, 100,000 and more): an
    AOR with one contact, by far the common case, maps straight to its Binding; only an AOR
    with several contacts gets a dict of them. The source address tuples and their host strings
    are shared between bindings from the same address (`_peers`), and the expiry heap holds
    (expires_at, binding) pairs ordered by a per-push counter instead of copies of the keys.
    """

    __slots__ = ("_by_aor", "_expiry", "_upserts", "_deletes", "_peers", "_count", "_flows")

    def __init__(self) -> None:
        self._by_aor: dict[str, Binding | dict[str, Binding]] = {}
        # lazy heap: (expires_at, tie-breaker, binding); stale when the binding changed since
        self._expiry: list[tuple[float, int, Binding]] = []
        self._upserts: dict[tuple[str, str], Binding] = {}
        self._deletes: set[tuple[str, str]] = set()
        self._peers: dict[Peer, Peer] = {}
        self._count = 0
        # RFC 5626 outbound bindings by the connection (flow) they came over: (aor, contact)
        # of each; entries are checked against the binding when used (it may be gone since)
        self._flows: dict[Peer, set[tuple[str, str]]] = {}

    def _of(self, aor: str) -> dict[str, Binding] | None:
        found = self._by_aor.get(aor)
        if found is None or isinstance(found, dict):
            return found
        return {found.contact: found}

    # ---- reading -----------------------------------------------------------------------------

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of an AOR, highest q first (then most recently registered)."""
        found = self._by_aor.get(aor)
        if found is None:
            return []
        if not isinstance(found, dict):
            return [found] if found.expires_at > now else []
        live = [b for b in found.values() if b.expires_at > now]
        if len(live) > 1:
            live.sort(key=lambda b: (-(b.q if b.q is not None else 1.0), -b.expires_at))
        return live

    def get(self, aor: str, contact: str) -> Binding | None:
        found = self._by_aor.get(aor)
        if found is None:
            return None
        if not isinstance(found, dict):
            return found if found.contact == contact else None
        return found.get(contact)

    def is_registered(self, aor: str, now: float) -> bool:
        found = self._by_aor.get(aor)
        if found is None:
            return False
        if not isinstance(found, dict):
            return found.expires_at > now
        return any(b.expires_at > now for b in found.values())

    def __len__(self) -> int:
        return sum(len(v) if isinstance(v, dict) else 1 for v in self._by_aor.values())

    def aors(self) -> Iterable[str]:
        return self._by_aor.keys()

    def all_bindings(self) -> Iterable[Binding]:
        for found in self._by_aor.values():
            if isinstance(found, dict):
                yield from found.values()
            else:
                yield found

    # ---- writing -----------------------------------------------------------------------------

    def _compact(self, b: Binding) -> None:
        """Share the source address tuple (and so its host string) with earlier bindings."""
        peer = self._peers.get(b.received)
        if peer is None:
            if len(self._peers) >= 65536:  # bounded: a flood of sources must not grow it forever
                self._peers.clear()
            peer = self._peers[b.received] = b.received
        b.received = peer

    def _place(self, b: Binding) -> None:
        found = self._by_aor.get(b.aor)
        if found is None or (not isinstance(found, dict) and found.contact == b.contact):
            self._by_aor[b.aor] = b
        elif isinstance(found, dict):
            found[b.contact] = b
        else:
            self._by_aor[b.aor] = {found.contact: found, b.contact: b}
        self._count += 1
        heapq.heappush(self._expiry, (b.expires_at, self._count, b))

    def put(self, binding: Binding) -> None:
        key = (binding.aor, binding.contact)
        self._compact(binding)
        self._place(binding)
        self._upserts[key] = binding
        self._deletes.discard(key)
        if binding.reg_id is not None and binding.received.reliable and not binding.path:
            self._flows.setdefault(binding.received, set()).add(key)

    def remove(self, aor: str, contact: str) -> Binding | None:
        found = self._by_aor.get(aor)
        if found is None:
            return None
        if isinstance(found, dict):
            b = found.pop(contact, None)
            if b is None:
                return None
            if len(found) == 1:
                self._by_aor[aor] = next(iter(found.values()))
            elif not found:
                del self._by_aor[aor]
        else:
            if found.contact != contact:
                return None
            b = found
            del self._by_aor[aor]
        key = (aor, contact)
        self._upserts.pop(key, None)
        self._deletes.add(key)
        return b

    def remove_flow(self, flow: Peer) -> list[Binding]:
        """The connection `flow` closed: remove and return the outbound bindings (RFC 5626:
        `+sip.instance` and `reg-id`) registered over it. Such a binding is reached over its
        flow only (§5.3), so with the flow gone it is useless; the UA registers a new flow."""
        gone: list[Binding] = []
        for aor, contact in self._flows.pop(flow, ()):
            b = self.get(aor, contact)
            if b is not None and b.reg_id is not None and b.received == flow and not b.path:
                self.remove(aor, contact)
                gone.append(b)
        return gone

    def remove_aor(self, aor: str) -> list[Binding]:
        found = self._of(aor) or {}
        return [b for c in list(found) if (b := self.remove(aor, c))]

    def load(self, bindings: Iterable[Binding]) -> None:
        """Add bindings read from the store (they are not marked as changed)."""
        for b in bindings:
            self._compact(b)
            self._place(b)

    def _current(self, entry: tuple[float, int, Binding]) -> bool:
        at, _, b = entry
        return b.expires_at == at and self.get(b.aor, b.contact) is b

    def expire(self, now: float) -> list[Binding]:
        """Remove and return every binding whose time is up."""
        gone: list[Binding] = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            b = entry[2]
            if self._current(entry) and b.expires_at <= now:
                self.remove(b.aor, b.contact)
                gone.append(b)
        return gone

    def next_expiry(self) -> float | None:
        heap = self._expiry
        while heap:
            if self._current(heap[0]):
                return heap[0][0]
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
