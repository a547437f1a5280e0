"""Prometheus metrics of a running server (`GET /metrics`).

Most numbers are read from the server's own objects when Prometheus scrapes (a pull
collector): registrations, calls, transactions, presence, queued messages, the guard's
counters. Only what no object keeps is measured here: HTTP answers by status, store write
latency, event-loop lag, security events (counted from the `heimbuero.security` log lines)
and the size of the file store (summed in a worker thread when scraped)."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("heimbuero.ops")

_R = TypeVar("_R")

_SECURITY = re.compile(r"^SECURITY (\S+) from ")


class SecurityCounter(logging.Handler):
    """Counts the security events the server logs (`SECURITY EVENT from …`), by event."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.events: Counter[str] = Counter()
        self._lock_counts = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        m = _SECURITY.match(str(record.msg))
        if m is None:
            try:
                m = _SECURITY.match(record.getMessage())
            except Exception:  # noqa: BLE001 - a broken record is not ours to report
                return
        if m is not None:
            with self._lock_counts:
                self.events[m.group(1)] += 1


def directory_bytes(path: Path) -> int:
    """Bytes of the regular files directly in `path` (the file store is flat)."""
    total = 0
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    except OSError:
        return 0
    return total


class ServerCollector(Collector):
    """Reads the numbers off the running server at each scrape (on the event loop).

    `server` is heimbuero.server.Server; every read is guarded, so a renamed attribute costs
    one metric (logged once), never the endpoint."""

    def __init__(self, server: Any, security: SecurityCounter, extra: ServerMetrics) -> None:
        self.server = server
        self.security = security
        self.extra = extra
        self._broken: set[str] = set()

    def _read(self, name: str, fn: Callable[[], _R]) -> _R | None:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - one metric lost, not the scrape
            if name not in self._broken:
                self._broken.add(name)
                log.warning("metric %s unavailable: %s", name, exc)
            return None

    def collect(self) -> Iterator[Metric]:
        s = self.server
        now = time.time()

        def gauge(name: str, doc: str, fn: Callable[[], float]) -> Iterator[Metric]:
            value = self._read(name, fn)
            if value is not None:
                yield GaugeMetricFamily(f"heimbuero_{name}", doc, value=value)

        def counter(name: str, doc: str, fn: Callable[[], float]) -> Iterator[Metric]:
            value = self._read(name, fn)
            if value is not None:
                yield CounterMetricFamily(f"heimbuero_{name}", doc, value=value)

        def labelled(
            name: str, doc: str, label: str, fn: Callable[[], dict[str, float]], kind: str
        ) -> Iterator[Metric]:
            values = self._read(name, fn)
            if values is None:
                return
            family: GaugeMetricFamily | CounterMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(f"heimbuero_{name}", doc, labels=[label])
            else:
                family = GaugeMetricFamily(f"heimbuero_{name}", doc, labels=[label])
            for key, value in sorted(values.items()):
                family.add_metric([key], value)
            yield family

        yield from gauge(
            "registrations", "Registered contacts (bindings) not yet expired",
            lambda: sum(1 for b in s.location.all_bindings() if b.expires_at > now),
        )  # fmt: skip
        yield from gauge(
            "registered_users", "Users with at least one registered contact",
            lambda: sum(1 for a in s.location.aors() if s.location.is_registered(a, now)),
        )  # fmt: skip
        yield from gauge(
            "calls_active", "Routed calls started and not ended (ringing or talking)",
            lambda: s.call_records.open_calls,
        )  # fmt: skip
        yield from labelled(
            "calls", "Routed calls ended, by result", "result",
            lambda: dict(s.call_records.results), "counter",
        )  # fmt: skip
        yield from gauge(
            "relay_calls", "Calls whose audio goes through the media relay now",
            lambda: len(s.anchor.calls) if s.anchor is not None else 0,
        )  # fmt: skip
        yield from counter(
            "relay_packets", "RTP packets the media relay forwarded in calls that ended",
            lambda: s.relay_totals["packets"],
        )  # fmt: skip
        yield from counter(
            "relay_packets_lost", "RTP packets lost on the way to the relay (sequence gaps)",
            lambda: s.relay_totals["lost"],
        )  # fmt: skip
        yield from counter(
            "relay_packets_expected", "RTP packets the senders sent (by sequence numbers) in "
            "relayed calls that ended: lost / expected is the loss ratio",
            lambda: s.relay_totals["expected"],
        )  # fmt: skip
        yield from counter(
            "relay_calls_poor_audio", "Relayed calls that ended whose worse direction lost at "
            "least 3 % of its packets or had at least 30 ms jitter (relay count or RTCP)",
            lambda: s.relay_totals["poor"],
        )  # fmt: skip
        yield from gauge("sip_transactions", "SIP transactions open", lambda: len(s.core.layer))
        yield from counter(
            "sip_retransmissions", "SIP requests and responses sent again by a retransmission "
            "timer (A, E, G)", lambda: s.core.layer.retransmissions,
        )  # fmt: skip
        yield from labelled(
            "sip_messages", "SIP messages received, sent, dropped (unanswered) and rejected",
            "kind", lambda: dict(s.core.stats), "counter",
        )  # fmt: skip
        yield from labelled(
            "security_events", "Security events logged for fail2ban, by event", "event",
            lambda: dict(self.security.events), "counter",
        )  # fmt: skip
        yield from counter(
            "auth_failures", "Wrong digest answers (wrong password or unknown user)",
            lambda: self.security.events.get("auth-failure", 0),
        )  # fmt: skip
        yield from counter(
            "bans", "Sources banned for flooding", lambda: s.core.guard.stats["banned"]
        )
        yield from labelled(
            "guard_dropped", "Requests the guard dropped or refused", "reason",
            lambda: {k: v for k, v in s.core.guard.stats.items() if k != "banned"}, "counter",
        )  # fmt: skip
        yield from gauge(
            "presence_subscriptions", "Presence and dialog subscriptions held",
            lambda: len(s.presence.subs),
        )  # fmt: skip
        yield from gauge(
            "messages_queued", "Instant messages waiting for their recipient",
            lambda: s.messages.waiting(),
        )  # fmt: skip
        yield from labelled(
            "messages", "Instant messages by what happened to them", "event",
            lambda: dict(s.messages.stats), "counter",
        )  # fmt: skip
        yield from gauge(
            "file_store_bytes", "Bytes in the file store",
            lambda: self.extra.file_bytes,
        )  # fmt: skip
        yield from labelled(
            "http_responses", "HTTP answers by status code", "status",
            lambda: {str(k): v for k, v in self.extra.http_status.items()}, "counter",
        )  # fmt: skip


class ServerMetrics:
    """The registry of one server with what it measures itself."""

    def __init__(self, server: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.http_status: Counter[int] = Counter()
        self.file_bytes = 0
        self.loop_lag = Histogram(
            "heimbuero_event_loop_lag_seconds",
            "How late the event loop ran a timer (sampled 4 times a second)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.store_write = Histogram(
            "heimbuero_store_write_seconds",
            "Duration of one store write batch (a group commit with its fsync)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.security = SecurityCounter()
        logging.getLogger("heimbuero.security").addHandler(self.security)
        self.registry.register(ServerCollector(server, self.security, self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def close(self) -> None:
        logging.getLogger("heimbuero.security").removeHandler(self.security)

    def http_answer(self, status: int) -> None:
        self.http_status[status] += 1

    def timed(self, fn: Callable[..., _R]) -> Callable[..., _R]:
        """`fn` with each call's duration in the store write histogram."""
        hist = self.store_write

        def timed_call(*args: Any, **kwargs: Any) -> _R:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                hist.observe(time.perf_counter() - started)

        return timed_call

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
