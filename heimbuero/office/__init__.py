"""Business rules of the office (accounts, roles, password policy); knows no SIP and no SQL."""
