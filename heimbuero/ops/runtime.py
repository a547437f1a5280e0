"""The operator's side of a running server: readiness, metrics, the measuring tasks, and
SIGHUP (reread config.toml, apply what can change safely)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import Any

from heimbuero import config as config_mod
from heimbuero.ops import logsetup
from heimbuero.ops.health import Readiness
from heimbuero.ops.metrics import ServerMetrics, directory_bytes

log = logging.getLogger("heimbuero.ops")

LAG_INTERVAL = 0.25  # seconds between two event-loop lag samples
FILE_BYTES_MAX_AGE = 1.0  # seconds a sum of the file store is reused by the next scrape


class Operations:
    """Built by the server (`server` is heimbuero.server.Server)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        cfg = server.config
        self.metrics_settings = cfg.metrics
        self.metrics = ServerMetrics(server)
        self.serving = False
        self.readiness = Readiness(
            store_url=cfg.db_url,
            engine=None,
            listen=[(a.transport, a.host, a.port) for a in cfg.sip.listen],
            bound=server.transports.bound,
            serving=lambda: self.serving,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._file_bytes_at = float("-inf")
        # what the command line said (serve --log-level, --log-format) wins over config.toml
        # at a reload too: the settings that differ from the file now
        self.cli_overrides: dict[str, str] = {}
        try:
            on_disk = config_mod.load(cfg.data_dir)
        except config_mod.ConfigError:
            on_disk = cfg
        for key in ("log_level", "log_format", "log_numbers"):
            if getattr(on_disk, key) != getattr(cfg, key):
                self.cli_overrides[key] = getattr(cfg, key)

    # -- tasks ---------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._loop_lag())]

    async def stop(self) -> None:
        self.serving = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.metrics.close()

    async def _loop_lag(self) -> None:
        hist = self.metrics.loop_lag
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_INTERVAL)
            hist.observe(max(0.0, time.monotonic() - before - LAG_INTERVAL))

    async def refresh_file_bytes(self) -> None:
        """Sum the file store for a scrape (a worker thread; at most once a second)."""
        now = time.monotonic()
        if now - self._file_bytes_at < FILE_BYTES_MAX_AGE:
            return
        self._file_bytes_at = now
        loop = asyncio.get_running_loop()
        files_dir = self.server.config.files_dir
        self.metrics.file_bytes = await loop.run_in_executor(None, directory_bytes, files_dir)

    # -- SIGHUP --------------------------------------------------------------------------------

    def reload(self) -> list[str]:
        """Reread config.toml and apply what can change without dropping a call or a
        registration: log level, log format, number shortening, the /metrics allow-list and
        token. Returns what changed; a broken config.toml is logged and changes nothing."""
        server = self.server
        old = server.config
        try:
            new = config_mod.load(old.data_dir)
        except config_mod.ConfigError as exc:
            log.error("reload: config.toml not applied: %s", exc)
            return []
        for key, value in self.cli_overrides.items():
            new = replace(new, **{key: value})  # type: ignore[arg-type]
        changed = []
        for key in ("log_level", "log_format", "log_numbers"):
            if getattr(new, key) != getattr(old, key):
                changed.append(f"{key}={getattr(new, key)}")
        if new.metrics != old.metrics:
            changed.append("metrics")
        logsetup.configure(new.log_level, new.log_format, new.log_numbers)
        self.metrics_settings = new.metrics
        server.config = replace(
            old,
            log_level=new.log_level,
            log_format=new.log_format,
            log_numbers=new.log_numbers,
            metrics=new.metrics,
        )
        log.info(
            "reload: config.toml reread; applied: %s (other settings take effect at restart)",
            ", ".join(changed) or "nothing changed",
        )
        return changed
