"""Domain types: the office's configuration as plain, immutable data (provider, clients,
numbers, users, groups, trunks, rules, overrides, call policies) and the pure functions that
belong to the values themselves (classifying a number, a call policy's JSON form).

The lowest layer of heimbuero: it imports nothing of ours outside `heimbuero.domain`, and
`office`, `store` and everything above may import it (see docs/ARCHITECTURE.md)."""
