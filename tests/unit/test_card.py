"""The client card of the screen pop (office/card.py): the greeting with the agent's name,
the caller recognised as one of the client's VIPs, the rule that sent the call."""

from heimbuero.domain.model import Client, User, VipCaller
from heimbuero.office.card import agent_name, client_card, greeting_for

MUELLER = Client(
    "mueller", "Tischlerei Müller", greeting="Tischlerei Müller, guten Tag, Sie sprechen mit …",
    vip_callers=(VipCaller("+491712345678", "Herr Meier", "sofort durchstellen"),),
)  # fmt: skip


def test_the_agents_name_goes_into_the_greetings_slot():
    assert greeting_for(MUELLER.greeting, "Anna").endswith("Sie sprechen mit Anna")
    assert greeting_for("Guten Tag, hier ist {agent} von Müller.", "Ben") == (
        "Guten Tag, hier ist Ben von Müller."
    )
    assert greeting_for("Sie sprechen mit ...", "Ben") == "Sie sprechen mit Ben"
    assert greeting_for("Tischlerei Müller, guten Tag.", "Ben") == "Tischlerei Müller, guten Tag."
    assert greeting_for("", "Ben") == ""
    assert agent_name(User("anna", "agent", display_name="Anna Berger"), "anna") == "Anna"
    assert agent_name(User("ben", "agent"), "ben") == "Ben"
    assert agent_name(None, "carla") == "Carla"


def test_a_vip_caller_is_named_whatever_form_the_caller_has():
    for caller in ("+491712345678", "sip:+491712345678@carrier.example;user=phone",
                   "tel:+491712345678"):  # fmt: skip
        card = client_card(MUELLER, None, "anna", call_id="c1", number="+49891234567",
                           caller=caller, rule="Werktags")  # fmt: skip
        assert card["vip"] == {"name": "Herr Meier", "remark": "sofort durchstellen"}, caller
        assert card["rule"] == "Werktags" and card["greeting"].endswith("mit Anna")
    other = client_card(MUELLER, None, "anna", call_id="c2", number="+49891234567",
                        caller="+4930555123", rule="")  # fmt: skip
    assert other["vip"] is None
    # a number that only ends like a VIP's is not one
    assert MUELLER.vip("+4917123456789") is None and MUELLER.vip("1712345678") is None
