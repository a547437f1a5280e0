"""`heimbuero dictation …`: thin adapters over the dictation handlers (app/dictation.py), as
the local admin (whoever may open the data directory). The command line runs without the
server: what it changes is stored, the document is e-mailed when [mail] is set, but the
author's messenger news are sent only by the running server (deliver through the HTTP API
for them)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def _handler(args: argparse.Namespace) -> Iterator[tuple[Any, Any]]:
    from heimbuero import config
    from heimbuero.store import SchemaError, Store

    data_dir = config.resolve_data_dir(args.data)
    if not (data_dir / config.CONFIG_FILE).is_file():
        raise config.ConfigError(f"{data_dir} is no data directory: run 'heimbuero init'")
    cfg = config.load(data_dir)
    store = Store(cfg.db_url)
    try:
        if not store.schema_is_current():
            raise SchemaError(f"the database schema of {data_dir} is not current")
        yield cfg, store
    finally:
        store.close()


def _dictation(cfg: Any, store: Any) -> Any:
    from heimbuero.app.dictation import Dictation
    from heimbuero.net.mail import Mailer
    from heimbuero.office.files import FileService
    from heimbuero.server import public_base_url

    files = FileService(store, cfg.files_dir, cfg.files, public_base_url(cfg.http))
    return Dictation(store, files, cfg.dictation, None, None, Mailer(cfg.mail))


def _actor(args: argparse.Namespace) -> Any:
    from heimbuero.app.policy import Actor, Role

    if args.as_user:
        return Actor(args.as_user.lower(), Role.AGENT)
    return Actor.local_admin()


def _row(j: Any) -> str:
    due = j.due_at.strftime("%Y-%m-%d %H:%M") if j.due_at else "-"
    return (
        f"{j.id:>5}  {j.state:<22} {j.priority:<6} {due:<16} {j.client_id:<12} "
        f"{j.author:<12} {j.typist or '-':<10} {j.title}"
    )


def cmd_list(args: argparse.Namespace) -> int:
    with _handler(args) as (cfg, store):
        d = _dictation(cfg, store)
        if args.queue:
            jobs = [j for j, _ in d.queue(_actor(args), args.client, args.work_type)]
        else:
            jobs = d.jobs(_actor(args), args.client, args.work_type, args.state)
    for j in jobs:
        print(_row(j))
    if not jobs:
        print("no dictation jobs")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from heimbuero.web.dictation import job_out

    with _handler(args) as (cfg, store):
        job = _dictation(cfg, store).get(_actor(args), args.job)
    print(json.dumps(job_out(job), indent=2, ensure_ascii=False))
    return 0


def cmd_take(args: argparse.Namespace) -> int:
    with _handler(args) as (cfg, store):
        outcome = _dictation(cfg, store).take(_actor(args), args.job)
    print(f"job {outcome.job.id} taken by {outcome.job.typist} until {outcome.job.locked_until}")
    return 0


def cmd_deliver(args: argparse.Namespace) -> int:
    with _handler(args) as (cfg, store):
        d = _dictation(cfg, store)
        actor = _actor(args)
        if args.text_file is not None:
            text = sys.stdin.read() if args.text_file == "-" else Path(args.text_file).read_text()
            job = d.get(actor, args.job)
            d.save_draft(actor, args.job, text, job.draft_version)
        outcome = d.deliver(actor, args.job)
        asyncio.run(d.announce(outcome))
    j = outcome.job
    print(f"job {j.id} {j.state}: {j.normzeilen} Normzeilen ({j.characters} characters), "
          f"{j.audio_seconds / 60:.1f} minutes of audio")  # fmt: skip
    return 0


def add_parsers(commands: Any, data: argparse.ArgumentParser) -> None:
    """Add `dictation list|show|take|deliver` to the CLI's subcommands."""
    from heimbuero.office.dictation import State, WorkType

    top = commands.add_parser("dictation", help="dictation jobs: list, show, take, deliver")
    sub = top.add_subparsers(dest="dictation_command", metavar="ACTION", required=True)
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--as", dest="as_user", metavar="TYPIST",
                     help="act as this typist (an agent); default: the local admin")  # fmt: skip
    p = sub.add_parser("list", parents=[data, who], help="jobs, newest first (or the queue)")
    p.add_argument("--client", metavar="ID")
    p.add_argument("--work-type", choices=[w.value for w in WorkType])
    p.add_argument("--state", choices=[s.value for s in State])
    p.add_argument("--queue", action="store_true", help="the typists' queue order")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", parents=[data, who], help="one job as JSON (parts, history)")
    p.add_argument("job", type=int, metavar="JOB")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("take", parents=[data, who], help="check a job out to the typist")
    p.add_argument("job", type=int, metavar="JOB")
    p.set_defaults(func=cmd_take)
    p = sub.add_parser(
        "deliver", parents=[data, who], help="deliver the typist's draft as DOCX",
        description="Deliver the job's draft (or the text of --text FILE, '-' for stdin) as "
        "DOCX from the client's letterhead; prints the Normzeilen. The typist must hold the "
        "job (take it with the same --as).",
    )  # fmt: skip
    p.add_argument("job", type=int, metavar="JOB")
    p.add_argument("--text", dest="text_file", metavar="FILE")
    p.set_defaults(func=cmd_deliver)
