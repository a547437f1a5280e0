"""`heimbuero install-service`: the hardened systemd unit (template heimbuero.service.in next
to this file; docs/systemd/heimbuero.service is it with the default paths)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from heimbuero.ops.backup import BackupError

TEMPLATE = Path(__file__).with_name("heimbuero.service.in")
UNIT_NAME = "heimbuero.service"
DEFAULT_DATA = Path("/var/lib/heimbuero")
DEFAULT_EXEC = "/opt/heimbuero/.venv/bin/heimbuero"


def render_unit(data_dir: Path, executable: str, user: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        raise BackupError(f"not a system user name: {user!r}")
    for what, value in (("data directory", str(data_dir)), ("program", executable)):
        if not value.startswith("/") or re.search(r"[\s\"'\\$%;]", value):
            raise BackupError(f"the {what} {value!r} must be an absolute path without spaces")
    text = TEMPLATE.read_text(encoding="utf-8")
    return (
        text.replace("@USER@", user).replace("@EXEC@", executable).replace("@DATA@", str(data_dir))
    )


def this_program() -> str:
    """How this installation's `heimbuero` is started: its script next to the interpreter,
    else the interpreter with -m."""
    script = Path(sys.executable).with_name("heimbuero")
    if script.is_file():
        return str(script)
    return f"{sys.executable} -m heimbuero"


def install_service(data_dir: Path, unit_dir: Path, user: str, dry_run: bool) -> str:
    """Write the unit (unless dry_run); return what to print: the unit or the next steps."""
    program = this_program()
    unit = render_unit(data_dir, program.split()[0], user)
    if " -m " in program:
        unit = unit.replace(f"ExecStart={program.split()[0]} serve", f"ExecStart={program} serve")
    if dry_run:
        return unit
    if not unit_dir.is_dir():
        raise BackupError(f"no such directory: {unit_dir}")
    path = unit_dir / UNIT_NAME
    path.write_text(unit, encoding="utf-8")
    path.chmod(0o644)
    notes = []
    if program.startswith(("/root/", "/home/")):
        notes.append(
            f"note: {program} is in a home directory, which the unit hides (ProtectHome=yes) "
            "and the service user cannot read: install heimbuero under /opt/heimbuero and run "
            "its install-service, or change ProtectHome in the unit\n"
        )
    nologin = shutil.which("nologin") or "/usr/sbin/nologin"
    return (
        f"wrote {path}\n" + "".join(notes) + "now run (as root):\n"
        f"  useradd --system --home-dir {data_dir} --shell {nologin} {user}\n"
        f"  install -d -o {user} -g {user} -m 0700 {data_dir}\n"
        f"  runuser -u {user} -- {program} init --data {data_dir} --domain YOUR.DOMAIN\n"
        f"  systemctl daemon-reload\n"
        f"  systemctl enable --now {UNIT_NAME}\n"
        f"  journalctl -u {UNIT_NAME} -f        # its log\n"
        f"then 'systemctl reload {UNIT_NAME}' after changing log or metrics settings in "
        f"{data_dir}/config.toml, 'systemctl restart {UNIT_NAME}' after other changes\n"
    )
