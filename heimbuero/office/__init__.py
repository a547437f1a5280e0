"""Business rules of the office (accounts, roles, password policy, routing, rules documents);
knows no SIP and no SQL.

Importing it hands the store the office's parser of rules documents
(`Store.load_directory`, `Store.save_rules` validate with it; the store does not import us)."""

from heimbuero.office.rules_doc import parse_rules_document as _parse_rules_document
from heimbuero.store.db import set_default_rules_parser

set_default_rules_parser(_parse_rules_document)
