"""The client card an agent's console shows while a client's call rings (the screen pop):
whose call it is, how to answer it, who is calling. Pure: the directory's records in, a
JSON-ready mapping out."""

from __future__ import annotations

import re
from typing import Any

from heimbuero.domain.model import Client, User

# where the agent's name goes into a greeting: "{agent}", or a trailing "…" / "..."
_AGENT_SLOT = re.compile(r"\{agent\}|(?:…|\.\.\.)\s*$")


def agent_name(user: User | None, fallback: str) -> str:
    """What an agent says of themself: the first word of their display name, else the user
    name capitalised ("Anna Berger" -> "Anna")."""
    if user is not None and user.display_name.strip():
        return user.display_name.split()[0]
    return fallback[:1].upper() + fallback[1:]


def greeting_for(greeting: str, agent: str) -> str:
    """The client's greeting with the agent's name in its slot ("{agent}" or a trailing "…");
    a greeting without a slot stays as it is."""
    return _AGENT_SLOT.sub(lambda m: agent, greeting, count=1) if greeting else ""


def client_card(
    client: Client, agent: User | None, agent_user: str, *, call_id: str, number: str,
    caller: str, rule: str,
) -> dict[str, Any]:  # fmt: skip
    vip = client.vip(caller)
    return {
        "call_id": call_id,
        "client": client.id,
        "name": client.name,
        "greeting": greeting_for(client.greeting, agent_name(agent, agent_user)),
        "notes": client.notes,
        "trade": client.trade,
        "contact_person": client.contact_person,
        "number": number,
        "caller": caller,
        "rule": rule,
        "vip": None if vip is None else {"name": vip.name, "remark": vip.remark},
    }
