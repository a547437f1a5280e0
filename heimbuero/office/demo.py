"""The demo office of `heimbuero init --demo`: a provider, two agents in a group, two client
businesses with numbers, owners and rules, and a carrier trunk. See README ("Demo")."""

from __future__ import annotations

import secrets
from typing import Any

from heimbuero.domain.model import Client, Group, GroupTarget, Provider, Step, Trunk
from heimbuero.office import accounts
from heimbuero.office.callpolicy import CallPolicy
from heimbuero.store import Store

DEMO_TRUNK_HOST = "127.0.0.1"
DEMO_TRUNK_PORT = 5090
MUELLER_NUMBER = "+49891234567"
MUELLER_MOBILE = "+491701111111"
SCHULZ_NUMBER = "+49301234567"

# user -> (role, client, display name, mobile)
DEMO_USERS: dict[str, tuple[str, str | None, str, str | None]] = {
    "admin": ("admin", None, "Administrator", None),
    "anna": ("agent", None, "Anna", None),
    "ben": ("agent", None, "Ben", None),
    "mueller": ("client", "mueller", "Martin Müller", MUELLER_MOBILE),
    "schulz": ("client", "schulz", "Sabine Schulz", None),
}


def generate_password(name: str) -> str:
    """A random password (16 URL-safe characters, ~96 bits) that passes the password policy."""
    while True:
        password = secrets.token_urlsafe(12)
        try:
            accounts.check_password(name, password)
        except accounts.WeakPassword:
            continue
        return password


def mueller_rules() -> dict[str, Any]:
    """The rules document of Tischlerei Müller, as in docs/ROUTING.md."""
    return {
        "client": "mueller",
        "numbers": {
            MUELLER_NUMBER: {
                "rules": [
                    {
                        "name": "Override",
                        "when": {"override": "office"},
                        "steps": [{"targets": ["group:team"], "timeout": 30}],
                    },
                    {
                        "name": "Override Handy",
                        "when": {"override": "mobile"},
                        "steps": [{"targets": [f"external:{MUELLER_MOBILE}"], "timeout": 20}],
                    },
                    {
                        "name": "Werktag",
                        "when": {
                            "days": ["mon", "tue", "wed", "thu", "fri"],
                            "time": "07:00-16:00",
                            "holidays": "exclude",
                        },
                        "steps": [
                            {"targets": ["user:mueller"], "timeout": 15},
                            {"targets": ["group:team"], "timeout": 30},
                        ],
                    },
                    {
                        "name": "Sonst",
                        "steps": [
                            {"targets": ["group:team"], "timeout": 30},
                            {"targets": [f"external:{MUELLER_MOBILE}"], "timeout": 20},
                        ],
                    },
                ]
            }
        },
    }


def schulz_rules() -> dict[str, Any]:
    """The rules document of Sanitär Schulz: *21 override, otherwise always the team."""
    return {
        "client": "schulz",
        "numbers": {
            SCHULZ_NUMBER: {
                "rules": [
                    {
                        "name": "Override",
                        "when": {"override": "office"},
                        "steps": [{"targets": ["group:team"], "timeout": 30}],
                    },
                    {"name": "Immer", "steps": [{"targets": ["group:team"], "timeout": 30}]},
                ]
            }
        },
    }


def seed_demo(store: Store, realm: str) -> dict[str, str]:
    """Create the demo office; return user -> generated password (print them once).

    Expects an office without clients (raise AlreadyExists/UserExists otherwise)."""
    store.set_provider(
        Provider(
            name="Büroservice Sonnenschein",
            address="Sonnenstraße 1, 80331 München",
            default_steps=(Step((GroupTarget("team"),), 30),),
        )
    )
    store.add_client(
        Client(
            id="mueller",
            name="Tischlerei Müller",
            trade="Tischlerei",
            contact_person="Martin Müller",
            greeting="Tischlerei Müller, guten Tag, Sie sprechen mit …",
            timezone="Europe/Berlin",
            bundesland="BY",
            # the owner's mobile, approved for forwarding (rules "Override Handy", "Sonst")
            call_policy=CallPolicy(approved_numbers=(MUELLER_MOBILE,)),
        )
    )
    store.add_client(
        Client(
            id="schulz",
            name="Sanitär Schulz",
            trade="Sanitär",
            contact_person="Sabine Schulz",
            greeting="Sanitär Schulz, guten Tag, Sie sprechen mit …",
            timezone="Europe/Berlin",
            bundesland="BE",
        )
    )
    store.add_number(MUELLER_NUMBER, "mueller")
    store.add_number(SCHULZ_NUMBER, "schulz")
    passwords: dict[str, str] = {}
    for name, (role, client, display, mobile) in DEMO_USERS.items():
        password = generate_password(name)
        accounts.add_user(store, realm, name, password, role)
        store.user_update(name, client=client, display_name=display, mobile=mobile)
        passwords[name] = password
    store.add_group(Group("team", "ring_all", ("anna", "ben")))
    store.add_trunk(
        Trunk(
            name="carrier",
            host=DEMO_TRUNK_HOST,
            port=DEMO_TRUNK_PORT,
            transport="udp",
            prefixes=("+49",),
        )
    )
    store.save_rules("mueller", mueller_rules())
    store.save_rules("schulz", schulz_rules())
    return passwords
