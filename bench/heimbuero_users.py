"""Create many bench users in a heimbuero data directory quickly (run by bench/run.py).

Every user gets the same password; the HA1 values are computed here (MD5 and SHA-256 of
"name:realm:password", realm = the data directory's domain) and one argon2id hash is reused, so
100,000 users take seconds instead of the ~3 minutes that 100,000 argon2 hashes and commits would.

Writes through, in this order of preference: `Store.add_users(rows)` when the store has a bulk
method; else one multi-row INSERT of heimbuero's own `users` table model in one transaction; else
`Store.add_user(...)` per user. Afterwards it reads two users back through `Store.get_user` and
checks their hashes, so a schema change shows up as an error here rather than as 401s later.

    python bench/heimbuero_users.py --data DIR --count N [--prefix user] [--extra callee ...]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", required=True, help="heimbuero data directory (after 'heimbuero init')"
    )
    ap.add_argument("--count", type=int, required=True, help="users PREFIX0 .. PREFIX{N-1}")
    ap.add_argument("--prefix", default="user")
    ap.add_argument("--extra", action="append", default=[], help="one more user name (repeatable)")
    ap.add_argument("--password", default="benchpass")
    ap.add_argument("--role", default=None, help="default: heimbuero's default role")
    args = ap.parse_args(argv)

    from argon2 import PasswordHasher

    from heimbuero import config
    from heimbuero.store.db import Store

    try:
        from heimbuero.office.accounts import DEFAULT_ROLE
    except ImportError:
        DEFAULT_ROLE = "employee"
    role = args.role or DEFAULT_ROLE
    cfg = config.load(Path(args.data).resolve())
    realm = cfg.domain
    password_hash = PasswordHasher().hash(args.password)
    names = list(args.extra) + [f"{args.prefix}{i}" for i in range(args.count)]

    def row(name: str) -> tuple[str, str, str, str, str]:
        a1 = f"{name}:{realm}:{args.password}".encode()
        return (
            name,
            role,
            hashlib.md5(a1, usedforsecurity=False).hexdigest(),
            hashlib.sha256(a1).hexdigest(),
            password_hash,
        )

    rows = [row(n) for n in names]
    t0 = time.monotonic()
    store = Store(cfg.db_url)
    how = ""
    try:
        bulk = getattr(store, "add_users", None)
        if callable(bulk):
            bulk(rows)
            how = "Store.add_users"
        else:
            try:
                from sqlalchemy import create_engine, insert

                from heimbuero.store.models import User
            except ImportError:
                User = None  # noqa: N806
            if User is not None:
                now = datetime.now(UTC)
                engine = create_engine(cfg.db_url)
                try:
                    with engine.begin() as conn:
                        for i in range(0, len(rows), 20_000):
                            conn.execute(
                                insert(User),
                                [
                                    {
                                        "name": n,
                                        "role": r,
                                        "ha1_md5": m,
                                        "ha1_sha256": s,
                                        "password_hash": p,
                                        "created_at": now,
                                    }
                                    for n, r, m, s, p in rows[i : i + 20_000]
                                ],
                            )
                finally:
                    engine.dispose()
                how = "one INSERT transaction of heimbuero.store.models.User"
            else:
                for r in rows:
                    store.add_user(*r)
                how = "Store.add_user per user"
        for name, _role, md5, sha, _p in (rows[0], rows[-1]):
            got = store.get_user(name)
            if got is None or got.ha1_md5 != md5 or got.ha1_sha256 != sha:
                print(
                    f"heimbuero_users: user {name!r} did not read back as written", file=sys.stderr
                )
                return 1
    finally:
        store.close()
    print(f"added {len(rows)} users in {time.monotonic() - t0:.1f} s via {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
