"""`heimbuero voicemail list|heard|delete`: the messages of a mailbox, as the local admin.
Thin: heimbuero/app/voicemail.py checks and changes the store. A change made here reaches the
box's phones (message waiting) within a minute: the running server reads the counts of every
box again in its housekeeping (this process has no SIP side)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from heimbuero.app.policy import Actor

OpenApp = Callable[[str | None], AbstractContextManager[tuple[Any, Any]]]
ADMIN = Actor.local_admin()


def add_parsers(commands: Any, data: argparse.ArgumentParser, open_app: OpenApp) -> None:
    def run(fn: Callable[[Any, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        def cmd(args: argparse.Namespace) -> int:
            with open_app(args.data) as (_cfg, app):
                return fn(app.voicemails, args)

        return cmd

    vm = commands.add_parser("voicemail", help="the messages of voicemail boxes")
    sub = vm.add_subparsers(dest="voicemail_command", metavar="ACTION", required=True)
    owner_help = "a client id (voicemail:CLIENT) or a user name (voicemail:USER)"
    p = sub.add_parser("list", parents=[data], help="a mailbox's messages, newest first")
    p.add_argument("owner", metavar="OWNER", help=owner_help)
    p.add_argument("--json", action="store_true", help="as JSON (as GET /api/voicemail/…)")
    p.set_defaults(func=run(_list))
    p = sub.add_parser("heard", parents=[data], help="mark a message heard")
    p.add_argument("owner", metavar="OWNER", help=owner_help)
    p.add_argument("id", metavar="ID", type=int)
    p.set_defaults(func=run(_heard))
    p = sub.add_parser("delete", parents=[data], help="delete a message and its recording")
    p.add_argument("owner", metavar="OWNER", help=owner_help)
    p.add_argument("id", metavar="ID", type=int)
    p.set_defaults(func=run(_delete))


def _list(vm: Any, args: argparse.Namespace) -> int:
    items = vm.list_box(ADMIN, args.owner)
    if args.json:
        print(json.dumps([
            {"id": m.id, "caller": m.caller, "received_at": m.received.isoformat(),
             "seconds": round(m.seconds, 2), "state": m.state}
            for m in items
        ], indent=2))  # fmt: skip
        return 0
    if not items:
        print("no messages")
        return 0
    print(f"{'ID':>6}  {'RECEIVED':<25}  {'CALLER':<20}  {'SECONDS':>7}  STATE")
    for m in items:
        print(f"{m.id:>6}  {m.received.isoformat(timespec='seconds'):<25}  "
              f"{m.caller:<20}  {m.seconds:>7.1f}  {m.state}")  # fmt: skip
    return 0


def _heard(vm: Any, args: argparse.Namespace) -> int:
    vm.set_heard(ADMIN, args.owner, args.id)
    print(f"voicemail {args.id} of {args.owner} heard")
    return 0


def _delete(vm: Any, args: argparse.Namespace) -> int:
    vm.remove(ADMIN, args.owner, args.id)
    print(f"voicemail {args.id} of {args.owner} deleted")
    return 0
