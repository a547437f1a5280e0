"""`heimbuero greeting …` and `heimbuero announcement …`: the audio the server plays on
calls, as the local admin. Thin: heimbuero/app/greetings.py checks, converts and stores."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from heimbuero.app.policy import Actor

OpenApp = Callable[[str | None], AbstractContextManager[tuple[Any, Any]]]
ADMIN = Actor.local_admin()


def add_parsers(commands: Any, data: argparse.ArgumentParser, open_app: OpenApp) -> None:
    def run(fn: Callable[[Any, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        def cmd(args: argparse.Namespace) -> int:
            with open_app(args.data) as (_cfg, app):
                return fn(app.greetings, args)

        return cmd

    greeting = commands.add_parser("greeting", help="voicemail greetings of mailboxes")
    sub = greeting.add_subparsers(dest="greeting_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "set", parents=[data], help="set a mailbox's greeting from an audio file",
        description="OWNER is a client id (voicemail:CLIENT) or a user name (voicemail:USER); "
        "FILE a WAV, MP3 or Ogg file (at most 10 MB, 5 min).",
    )  # fmt: skip
    p.add_argument("owner", metavar="OWNER")
    p.add_argument("file", metavar="FILE", type=Path)
    p.set_defaults(func=run(_greeting_set))
    p = sub.add_parser("delete", parents=[data], help="back to the spoken default greeting")
    p.add_argument("owner", metavar="OWNER")
    p.set_defaults(func=run(_greeting_delete))

    ann = commands.add_parser("announcement", help="a client's announcements (announce:NAME)")
    sub = ann.add_subparsers(dest="announcement_command", metavar="ACTION", required=True)
    p = sub.add_parser("set", parents=[data], help="add or replace an announcement")
    p.add_argument("client", metavar="CLIENT")
    p.add_argument("name", metavar="NAME", help="as in the rules: announce:NAME")
    p.add_argument("file", metavar="FILE", type=Path)
    p.set_defaults(func=run(_announcement_set))
    p = sub.add_parser("list", parents=[data], help="the client's announcements")
    p.add_argument("client", metavar="CLIENT")
    p.set_defaults(func=run(_announcement_list))
    p = sub.add_parser("delete", parents=[data], help="remove an announcement")
    p.add_argument("client", metavar="CLIENT")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=run(_announcement_delete))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"heimbuero: error: cannot read {path}: {exc.strerror}") from None


def _greeting_set(g: Any, args: argparse.Namespace) -> int:
    audio = g.set_greeting(ADMIN, args.owner, _read(args.file))
    print(f"greeting of {audio.owner} set ({audio.seconds:.1f} s)")
    return 0


def _greeting_delete(g: Any, args: argparse.Namespace) -> int:
    g.delete_greeting(ADMIN, args.owner)
    print(f"greeting of {args.owner} deleted: callers hear the spoken default")
    return 0


def _announcement_set(g: Any, args: argparse.Namespace) -> int:
    audio = g.set_announcement(ADMIN, args.client, args.name, _read(args.file))
    print(f"announcement {audio.name} of {audio.owner} set ({audio.seconds:.1f} s)")
    return 0


def _announcement_list(g: Any, args: argparse.Namespace) -> int:
    items = g.announcements(ADMIN, args.client)
    if not items:
        print("no announcements")
    for a in items:
        print(f"{a.name}\t{a.seconds:.1f} s")
    return 0


def _announcement_delete(g: Any, args: argparse.Namespace) -> int:
    g.delete_announcement(ADMIN, args.client, args.name)
    print(f"announcement {args.name} of {args.client} deleted")
    return 0
