"""The presence documents the server generates validate against the schemas of their RFCs
(PIDF: RFC 3863; dialog-info: RFC 4235; the XSDs are in tests/data/xsd with their source)."""

from __future__ import annotations

from pathlib import Path

import pytest
import xmlschema

from heimbuero.services.presence import DialogEntry, PresenceState, dialog_info, pidf

XSD = Path(__file__).resolve().parent.parent / "data" / "xsd"


@pytest.fixture(scope="module")
def pidf_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(XSD / "pidf.xsd")


@pytest.fixture(scope="module")
def dialog_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(XSD / "dialog-info.xsd")


@pytest.mark.parametrize(
    "state",
    [
        PresenceState("anna", online=False),
        PresenceState("anna", online=True, registered=True),
        PresenceState("anna", online=True, activity="on-the-phone", on_the_phone=True),
        PresenceState("anna", online=True, note='Mittag & "Pause" <bis 14>'),
        PresenceState("anna", online=True, activity="away", note="Zurück um 14 Uhr"),
    ],
)
def test_pidf_is_valid_per_rfc_3863(pidf_schema: xmlschema.XMLSchema, state: PresenceState) -> None:
    pidf_schema.validate(pidf("sip:anna@office.example", state).decode())


@pytest.mark.parametrize(
    "calls",
    [
        [],
        [DialogEntry("call-1@host", "confirmed")],
        [DialogEntry("a@b", "confirmed"), DialogEntry('x"<&>y', "terminated")],
        [
            DialogEntry(
                "r@h",
                "early",
                "recipient",
                "to-1",
                "from-1",
                "sip:+4989123@office.example",
                'Müller GmbH: 089 "123" <&>',
            )
        ],
    ],
)
def test_dialog_info_is_valid_per_rfc_4235(
    dialog_schema: xmlschema.XMLSchema, calls: list[DialogEntry]
) -> None:
    dialog_schema.validate(dialog_info("sip:anna@office.example", 7, calls).decode())
