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

# [sip] settings a reload applies: the limits of heimbuero.services.guard
GUARD_KEYS = (
    "flood_rate", "flood_burst", "ban_time", "flood_exempt", "scanner_user_agents",
    "auth_account_failures", "auth_source_failures", "auth_backoff_max",
)  # fmt: skip

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
        token, `[mail]`, the flood/ban/guessing limits of `[sip]` (bans and counts so far are
        kept), and the SIP TLS certificate files and `[sip.trunk_tls]` (for connections from
        now on). Returns what changed; a broken config.toml is logged and changes nothing, a
        certificate that does not load keeps the old one."""
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
        if new.mail != old.mail:
            changed.append("mail")
        guard_keys = GUARD_KEYS
        sip = old.sip
        if any(getattr(new.sip, k) != getattr(old.sip, k) for k in guard_keys):
            sip = replace(sip, **{k: getattr(new.sip, k) for k in guard_keys})
            server.core.update_guard(sip.guard(), sip.flood_exempt)
            changed.append("sip limits")
        tls = server.transports.tls
        if tls is not None and (old.uses_tls or new.sip.trunk_tls != old.sip.trunk_tls):
            cert_files = (new.tls_cert_path, new.tls_key_path) if old.uses_tls else (None, None)
            try:
                tls.reload(*cert_files, dict(new.sip.trunk_tls))
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                log.error("reload: the SIP TLS certificate was not loaded, the old one stays: %s",
                          exc)  # fmt: skip
            else:
                sip = replace(sip, tls_cert=new.sip.tls_cert, tls_key=new.sip.tls_key,
                              trunk_tls=new.sip.trunk_tls)  # fmt: skip
                changed.append("tls")
        logsetup.configure(new.log_level, new.log_format, new.log_numbers)
        self.metrics_settings = new.metrics
        server.mailer.settings = new.mail
        server.config = replace(
            old,
            log_level=new.log_level,
            log_format=new.log_format,
            log_numbers=new.log_numbers,
            metrics=new.metrics,
            mail=new.mail,
            sip=sip,
        )
        log.info(
            "reload: config.toml reread; applied: %s (other settings take effect at restart)",
            ", ".join(changed) or "nothing changed",
        )
        return changed
