"""One repository per aggregate. Each works inside the session of the unit of work that made it
(`store.uow.UnitOfWork`) and never commits: the unit of work commits everything it did, with the
office revision bump, or nothing. A repository method that changes what call routing reads
calls `self._uow.office_changed()`."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError

from heimbuero.domain.model import (
    CallEndReason,
    CallResult,
    Client,
    Directory,
    Group,
    Number,
    Override,
    Provider,
    Trunk,
)
from heimbuero.domain.rules import RulesInvalid, RulesParser
from heimbuero.store import closures
from heimbuero.store.base import Repository
from heimbuero.store.errors import AlreadyExists, InUse, NoSuchUser, NotFound, UserExists
from heimbuero.store.models import (
    ApiTokenRow,
    Binding,
    CallRecordRow,
    ClientRow,
    GroupMemberRow,
    GroupRow,
    NumberRow,
    OverrideRow,
    PresencePublication,
    PresenceSubscription,
    ProviderRow,
    RuleDocumentRow,
    TrunkRow,
    User,
    as_utc,
)
from heimbuero.store.records import (
    TOKEN_PREFIX,
    ApiToken,
    CallRecord,
    ClientSlice,
    DirectoryProblem,
    UserRecord,
    apply_call_update,
    call_record,
    check_call_update,
    client_from_row,
    client_values,
    mentions,
    provider_from_row,
    steps_to_json,
    token_hash,
    trunk_from_row,
    trunk_values,
    user_record,
    utc_opt,
)

UNSET: Any = object()  # "leave this field as it is"


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount or 0


def like_pattern(text: str) -> str:
    """`%text%` for LIKE ... ESCAPE '\\': the text's own `%`, `_` and `\\` match themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class UserRepository(Repository):
    """Users: accounts and office fields. (Their devices' bindings are written by the group
    commit, `Store.write_batch`; removing a user removes them here.)"""

    def add(
        self,
        name: str,
        role: str,
        ha1_md5: str,
        ha1_sha256: str,
        password_hash: str,
        client: str | None = None,
        display_name: str | None = None,
        mobile: str | None = None,
    ) -> UserRecord:
        """A new user with its office fields; UserExists when the name is taken, NotFound
        for an unknown client."""
        s = self._session
        if s.scalar(select(User.id).where(User.name == name)) is not None:
            raise UserExists(name)
        if client is not None and s.get(ClientRow, client) is None:
            raise NotFound("client", client)
        row = User(
            name=name,
            role=role,
            ha1_md5=ha1_md5,
            ha1_sha256=ha1_sha256,
            password_hash=password_hash,
            created_at=datetime.now(UTC),
            client=client,
            display_name=display_name,
            mobile=mobile,
        )
        s.add(row)
        try:
            s.flush()
        except IntegrityError:  # another process added the same name meanwhile
            raise UserExists(name) from None
        self._uow.office_changed()
        return user_record(row)

    def _row(self, name: str) -> User:
        row = self._session.scalar(select(User).where(User.name == name))
        if row is None:
            raise NoSuchUser(name)
        return row

    def get(self, name: str) -> UserRecord | None:
        row = self._session.scalar(select(User).where(User.name == name))
        return None if row is None else user_record(row)

    def all(self) -> list[UserRecord]:
        return [user_record(r) for r in self._session.scalars(select(User).order_by(User.name))]

    def set_password(self, name: str, ha1_md5: str, ha1_sha256: str, password_hash: str) -> None:
        row = self._row(name)
        row.ha1_md5, row.ha1_sha256, row.password_hash = ha1_md5, ha1_sha256, password_hash

    def update(
        self,
        name: str,
        client: str | None = UNSET,
        display_name: str | None = UNSET,
        mobile: str | None = UNSET,
        allow_rfc2069: bool | None = None,
    ) -> UserRecord:
        """Set office fields and SIP compatibility switches (UNSET ones stay)."""
        row = self._row(name)
        if client is not UNSET:
            if client is not None and self._session.get(ClientRow, client) is None:
                raise NotFound("client", client)
            row.client = client
        if display_name is not UNSET:
            row.display_name = display_name
        if mobile is not UNSET:
            row.mobile = mobile
        if allow_rfc2069 is not None:
            compat = dict(row.sip_compat or {})
            if allow_rfc2069:
                compat["rfc2069"] = True
            else:
                compat.pop("rfc2069", None)
            row.sip_compat = compat
        self._session.flush()
        self._uow.office_changed()
        return user_record(row)

    def set_status(self, name: str, status: str) -> UserRecord:
        """An agent's own status (routing reads it: the office revision moves)."""
        row = self._row(name)
        row.status = status
        self._session.flush()
        self._uow.office_changed()
        return user_record(row)

    def remove(self, name: str) -> bool:
        """Delete a user and its devices' bindings; False when there was none."""
        gone = _rowcount(self._session.execute(delete(User).where(User.name == name)))
        self._session.execute(delete(Binding).where(Binding.aor == name))
        if gone:
            self._uow.office_changed()
        return bool(gone)


class TokenRepository(Repository):
    """Users' API tokens (only their SHA-256 is stored)."""

    def create(self, user: str, name: str) -> tuple[ApiToken, str]:
        """A new token: (its metadata, the token itself, shown once)."""
        s = self._session
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)  # 32 random bytes
        u = s.scalar(select(User).where(User.name == user))
        if u is None:
            raise NoSuchUser(user)
        exists = s.scalar(
            select(ApiTokenRow.id).where(ApiTokenRow.user_id == u.id, ApiTokenRow.name == name)
        )
        if exists is not None:
            raise AlreadyExists("token", f"{user}/{name}")
        row = ApiTokenRow(
            user_id=u.id, name=name, token_hash=token_hash(token), created_at=datetime.now(UTC)
        )
        s.add(row)
        s.flush()
        return ApiToken(row.id, user, name, as_utc(row.created_at)), token

    def verify(self, token: str) -> UserRecord | None:
        """The user a token belongs to (its use is noted), or None."""
        s = self._session
        row = s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash(token)))
        if row is None:
            return None
        user = s.get(User, row.user_id)
        if user is None:
            return None
        row.last_used = datetime.now(UTC)
        return user_record(user)

    def all(self, user: str | None = None) -> list[ApiToken]:
        stmt = (
            select(ApiTokenRow, User.name)
            .join(User, User.id == ApiTokenRow.user_id)
            .order_by(User.name, ApiTokenRow.name)
        )
        if user is not None:
            stmt = stmt.where(User.name == user)
        return [
            ApiToken(t.id, u, t.name, as_utc(t.created_at), utc_opt(t.last_used))
            for t, u in self._session.execute(stmt)
        ]

    def revoke(self, user: str, name: str) -> bool:
        uid = select(User.id).where(User.name == user).scalar_subquery()
        stmt = delete(ApiTokenRow).where(ApiTokenRow.user_id == uid, ApiTokenRow.name == name)
        return bool(_rowcount(self._session.execute(stmt)))


class ProviderRepository(Repository):
    def get(self) -> Provider:
        return provider_from_row(self._session.get(ProviderRow, 1))

    def set(self, provider: Provider) -> None:
        values = {
            "name": provider.name,
            "address": provider.address,
            "vat_id": provider.vat_id,
            "iban": provider.iban,
            "bic": provider.bic,
            "default_steps": steps_to_json(provider.default_steps),
            "country_code": provider.country_code,
        }
        row = self._session.get(ProviderRow, 1)
        if row is None:
            self._session.add(ProviderRow(id=1, **values))
        else:
            for k, v in values.items():
                setattr(row, k, v)
        self._uow.office_changed()


class ClientRepository(Repository):
    """Client businesses, their numbers and their overrides."""

    def add(self, client: Client) -> Client:
        if self._session.get(ClientRow, client.id) is not None:
            raise AlreadyExists("client", client.id)
        self._session.add(ClientRow(id=client.id, **client_values(client)))
        try:
            self._session.flush()
        except IntegrityError:
            raise AlreadyExists("client", client.id) from None
        self._uow.office_changed()
        return client

    def update(self, client_id: str, **changes: Any) -> Client:
        row = self._session.get(ClientRow, client_id)
        if row is None:
            raise NotFound("client", client_id)
        new = replace(client_from_row(row), **changes)
        for k, v in client_values(new).items():
            setattr(row, k, v)
        self._uow.office_changed()
        return new

    def get(self, client_id: str) -> Client | None:
        row = self._session.get(ClientRow, client_id)
        return None if row is None else client_from_row(row)

    def all(self) -> list[Client]:
        rows = self._session.scalars(select(ClientRow).order_by(ClientRow.id))
        return [client_from_row(r) for r in rows]

    def find(
        self, text: str, number_parts: Sequence[str], page: int, per_page: int,
        only: str | None = None,
    ) -> ClientSlice:  # fmt: skip
        """One page of the clients whose id or name contains `text` (case-insensitive) or one
        of whose numbers contains one of `number_parts`; all clients when both are empty;
        only the client `only` when given. Ordered by id; counted and cut in the database
        (COUNT, then LIMIT/OFFSET), the numbers read for the page's clients only."""
        s = self._session
        found: list[ColumnElement[bool]] = []
        if text:
            # SQLite's lower() folds ASCII only; the store's connections have hb_lower (db.py)
            fold = func.hb_lower if s.get_bind().dialect.name == "sqlite" else func.lower
            pattern = like_pattern(text.lower())
            found += [fold(ClientRow.id).like(pattern, escape="\\"),
                      fold(ClientRow.name).like(pattern, escape="\\")]  # fmt: skip
        for part in number_parts:
            found.append(
                select(NumberRow.e164)
                .where(
                    NumberRow.client == ClientRow.id,
                    NumberRow.e164.like(like_pattern(part), escape="\\"),
                )  # fmt: skip
                .exists()
            )
        where: ColumnElement[bool] = or_(*found) if found else true()
        if only is not None:
            where = and_(where, ClientRow.id == only)
        total = int(s.scalar(select(func.count()).select_from(ClientRow).where(where)) or 0)
        last = max(1, -(-total // per_page))
        page = min(max(page, 1), last)
        rows = s.scalars(
            select(ClientRow).where(where).order_by(ClientRow.id)
            .limit(per_page).offset((page - 1) * per_page)
        )  # fmt: skip
        clients = [client_from_row(r) for r in rows]
        numbers: dict[str, list[str]] = {}
        if clients:
            stmt = (
                select(NumberRow.client, NumberRow.e164)
                .where(NumberRow.client.in_([c.id for c in clients]))
                .order_by(NumberRow.e164)
            )
            for client_id, e164 in s.execute(stmt):
                numbers.setdefault(client_id, []).append(e164)
        return ClientSlice(clients, {k: tuple(v) for k, v in numbers.items()}, page, total)

    def remove(self, client_id: str) -> bool:
        """Delete a client with its numbers, rules and override; its users stay (client
        cleared) and so do its call records."""
        s = self._session
        s.execute(update(User).where(User.client == client_id).values(client=None))
        s.execute(delete(NumberRow).where(NumberRow.client == client_id))
        s.execute(delete(RuleDocumentRow).where(RuleDocumentRow.client == client_id))
        s.execute(delete(OverrideRow).where(OverrideRow.client == client_id))
        gone = _rowcount(s.execute(delete(ClientRow).where(ClientRow.id == client_id)))
        if gone:
            self._uow.office_changed()
        return bool(gone)

    # -- numbers

    def add_number(self, e164: str, client_id: str, dictation: bool = False) -> Number:
        s = self._session
        if s.get(ClientRow, client_id) is None:
            raise NotFound("client", client_id)
        existing = s.get(NumberRow, e164)
        if existing is not None:
            raise AlreadyExists("number", f"{e164} (client {existing.client})")
        s.add(NumberRow(e164=e164, client=client_id, dictation=dictation))
        try:
            s.flush()
        except IntegrityError:
            raise AlreadyExists("number", e164) from None
        self._uow.office_changed()
        return Number(e164=e164, client=client_id, dictation=dictation)

    def set_number_dictation(self, e164: str, dictation: bool) -> Number | None:
        """Make a number the client's dictation number (or an ordinary one again)."""
        row = self._session.get(NumberRow, e164)
        if row is None:
            return None
        if row.dictation != dictation:
            row.dictation = dictation
            self._uow.office_changed()
        return Number(e164=row.e164, client=row.client, dictation=row.dictation)

    def remove_number(self, e164: str) -> bool:
        """Delete a number and drop it from its client's rules document."""
        s = self._session
        row = s.get(NumberRow, e164)
        if row is None:
            return False
        doc = s.get(RuleDocumentRow, row.client)
        if doc is not None and isinstance(doc.document.get("numbers"), dict):
            document = dict(doc.document)
            document["numbers"] = {k: v for k, v in document["numbers"].items() if k != e164}
            doc.document = document
            doc.updated_at = datetime.now(UTC)
        s.delete(row)
        self._uow.office_changed()
        return True

    def list_numbers(self, client_id: str | None = None) -> list[Number]:
        stmt = select(NumberRow).order_by(NumberRow.e164)
        if client_id is not None:
            stmt = stmt.where(NumberRow.client == client_id)
        return [
            Number(e164=r.e164, client=r.client, dictation=bool(r.dictation))
            for r in self._session.scalars(stmt)
        ]

    # -- overrides

    def set_override(self, override: Override) -> Override:
        until = None if override.until is None else as_utc(override.until)
        s = self._session
        if s.get(ClientRow, override.client) is None:
            raise NotFound("client", override.client)
        row = s.get(OverrideRow, override.client)
        if row is None:
            s.add(OverrideRow(client=override.client, target=override.target, until=until))
        else:
            row.target, row.until = override.target, until
        self._uow.office_changed()
        return Override(override.client, override.target, until)

    def get_override(self, client_id: str, now: datetime | None = None) -> Override | None:
        row = self._session.get(OverrideRow, client_id)
        if row is None:
            return None
        o = Override(row.client, row.target, utc_opt(row.until))
        if now is not None and o.until is not None and o.until <= as_utc(now):
            return None
        return o

    def clear_override(self, client_id: str) -> bool:
        stmt = delete(OverrideRow).where(OverrideRow.client == client_id)
        gone = _rowcount(self._session.execute(stmt))
        if gone:
            self._uow.office_changed()
        return bool(gone)

    def list_overrides(self, now: datetime | None = None) -> list[Override]:
        rows = [
            Override(r.client, r.target, utc_opt(r.until))
            for r in self._session.scalars(select(OverrideRow).order_by(OverrideRow.client))
        ]
        if now is None:
            return rows
        at = as_utc(now)
        return [o for o in rows if o.until is None or o.until > at]


class GroupRepository(Repository):
    def _group(self, row: GroupRow) -> Group:
        members = self._session.scalars(
            select(GroupMemberRow.user)
            .where(GroupMemberRow.group == row.name)
            .order_by(GroupMemberRow.position)
        )
        return Group(name=row.name, strategy=row.strategy, members=tuple(members))

    def _set_members(self, group: str, members: Iterable[str]) -> None:
        s = self._session
        names = list(dict.fromkeys(members))
        known = set(s.scalars(select(User.name).where(User.name.in_(names))))
        for m in names:
            if m not in known:
                raise NoSuchUser(m)
        s.execute(delete(GroupMemberRow).where(GroupMemberRow.group == group))
        s.add_all(GroupMemberRow(group=group, user=m, position=i) for i, m in enumerate(names))
        s.flush()

    def add(self, group: Group) -> Group:
        s = self._session
        if s.get(GroupRow, group.name) is not None:
            raise AlreadyExists("group", group.name)
        row = GroupRow(name=group.name, strategy=group.strategy)
        s.add(row)
        s.flush()
        self._set_members(group.name, group.members)
        self._uow.office_changed()
        return self._group(row)

    def update(
        self, name: str, strategy: str | None = None, members: Iterable[str] | None = None
    ) -> Group:
        row = self._session.get(GroupRow, name)
        if row is None:
            raise NotFound("group", name)
        if strategy is not None:
            row.strategy = strategy
        if members is not None:
            self._set_members(name, members)
        self._uow.office_changed()
        return self._group(row)

    def get(self, name: str) -> Group | None:
        row = self._session.get(GroupRow, name)
        return None if row is None else self._group(row)

    def all(self) -> list[Group]:
        rows = self._session.scalars(select(GroupRow).order_by(GroupRow.name)).all()
        return [self._group(r) for r in rows]

    def remove(self, name: str) -> bool:
        """Delete a group; InUse while rules or the provider's default plan ring it."""
        s = self._session
        if s.get(GroupRow, name) is None:
            return False
        target = f"group:{name}"
        users = [
            d.client for d in s.scalars(select(RuleDocumentRow)) if mentions(d.document, target)
        ]
        provider = s.get(ProviderRow, 1)
        if provider is not None and mentions(provider.default_steps, target):
            users.insert(0, "the provider's default plan")
        if users:
            raise InUse(f"group {name!r} is still used by: {', '.join(users)}")
        s.execute(delete(GroupMemberRow).where(GroupMemberRow.group == name))
        s.execute(delete(GroupRow).where(GroupRow.name == name))
        self._uow.office_changed()
        return True


class TrunkRepository(Repository):
    def add(self, trunk: Trunk) -> Trunk:
        if self._session.get(TrunkRow, trunk.name) is not None:
            raise AlreadyExists("trunk", trunk.name)
        self._session.add(TrunkRow(**trunk_values(trunk)))
        self._uow.office_changed()
        return trunk

    def update(self, name: str, **changes: Any) -> Trunk:
        row = self._session.get(TrunkRow, name)
        if row is None:
            raise NotFound("trunk", name)
        new = replace(trunk_from_row(row), **changes)
        for k, v in trunk_values(new).items():
            setattr(row, k, v)
        self._uow.office_changed()
        return new

    def get(self, name: str) -> Trunk | None:
        row = self._session.get(TrunkRow, name)
        return None if row is None else trunk_from_row(row)

    def all(self) -> list[Trunk]:
        rows = self._session.scalars(select(TrunkRow).order_by(TrunkRow.name))
        return [trunk_from_row(r) for r in rows]

    def remove(self, name: str) -> bool:
        gone = _rowcount(self._session.execute(delete(TrunkRow).where(TrunkRow.name == name)))
        if gone:
            self._uow.office_changed()
        return bool(gone)


class RulesRepository(Repository):
    """Each client's rules document, and the directory routing reads (with the documents
    parsed by the office layer's parser, passed in)."""

    def get_document(self, client_id: str) -> dict[str, Any] | None:
        row = self._session.get(RuleDocumentRow, client_id)
        return None if row is None else dict(row.document)

    def save(
        self,
        client_id: str,
        document: dict[str, Any],
        parse: RulesParser,
        check: Callable[[Directory], None] | None = None,
    ) -> dict[str, Number]:
        """Validate the document against the directory as this unit of work sees it and store
        it: NotFound for an unknown client, the parser's RulesInvalid (nothing stored) for an
        invalid document; the parsed numbers. `check(directory)` runs first (what it raises
        stores nothing)."""
        s = self._session
        if s.get(ClientRow, client_id) is None:
            raise NotFound("client", client_id)
        directory, _problems = self.load_directory(parse)
        if check is not None:
            check(directory)
        parsed = parse(document, client_id, directory)
        stored = json.loads(json.dumps(document, default=str))
        row = s.get(RuleDocumentRow, client_id)
        now = datetime.now(UTC)
        if row is None:
            s.add(RuleDocumentRow(client=client_id, document=stored, updated_at=now))
        else:
            row.document, row.updated_at = stored, now
        self._uow.office_changed()
        return parsed

    def load_directory(self, parse: RulesParser) -> tuple[Directory, list[DirectoryProblem]]:
        """The whole configuration routing reads, each number with the rules of its client's
        document. A document that no longer validates (say a user it names was removed) is
        left out, its numbers fall back to the default plan, and it is listed as a problem."""
        s = self._session
        uow = self._uow
        provider = uow.provider.get()
        clients = {c.id: c for c in uow.clients.all()}
        for closure in closures.list_for(s):  # the portal's closure ranges are closure days
            c = clients.get(closure.client)
            if c is not None:
                days = sorted({*c.closure_days, *closure.days()})
                clients[c.id] = replace(c, closure_days=tuple(days))
        numbers = {n.e164: n for n in uow.clients.list_numbers()}
        users = {r.name: r.office_user() for r in uow.users.all()}
        groups = {g.name: g for g in uow.groups.all()}
        trunks = {t.name: t for t in uow.trunks.all()}
        docs = [
            (r.client, dict(r.document))
            for r in s.scalars(select(RuleDocumentRow).order_by(RuleDocumentRow.client))
        ]
        base = Directory(provider, clients, numbers, users, groups, trunks)
        full = dict(numbers)
        problems: list[DirectoryProblem] = []
        for client_id, document in docs:
            try:
                parsed = parse(document, client_id, base)
            except RulesInvalid as exc:
                problems.append(DirectoryProblem(client_id, str(exc).splitlines()))
                continue
            for e164, number in parsed.items():
                if e164 in full and full[e164].client == client_id:
                    full[e164] = replace(number, dictation=full[e164].dictation)
        return Directory(provider, clients, full, users, groups, trunks), problems


class CallRepository(Repository):
    """Call records (what billing reads)."""

    def get(self, record_id: int) -> CallRecord | None:
        row = self._session.get(CallRecordRow, record_id)
        return None if row is None else call_record(row)

    def update(self, record_id: int, **fields: Any) -> CallRecord:
        check_call_update(fields)
        row = self._session.get(CallRecordRow, record_id)
        if row is None:
            raise NotFound("call record", str(record_id))
        apply_call_update(row, fields)
        self._session.flush()
        return call_record(row)

    def all(
        self,
        client: str | None = None,
        limit: int = 100,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
    ) -> list[CallRecord]:
        """Newest first; `since` inclusive, `until` exclusive (start times)."""
        stmt = select(CallRecordRow).order_by(
            CallRecordRow.started_at.desc(), CallRecordRow.id.desc()
        )
        if client is not None:
            stmt = stmt.where(CallRecordRow.client == client)
        if since is not None:
            stmt = stmt.where(CallRecordRow.started_at >= as_utc(since))
        if until is not None:
            stmt = stmt.where(CallRecordRow.started_at < as_utc(until))
        stmt = stmt.offset(offset).limit(limit)
        return [call_record(r) for r in self._session.scalars(stmt)]

    def by_caller(self, client: str, number: str, limit: int) -> list[CallRecord]:
        """The client's newest records of calls from `number` (the caller's URI's user part,
        or the caller as it was stored)."""
        pattern = "%:" + number.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "@%"
        stmt = (
            select(CallRecordRow)
            .where(CallRecordRow.client == client)
            .where(
                (CallRecordRow.caller == number) | CallRecordRow.caller.like(pattern, escape="\\")
            )
            .order_by(CallRecordRow.started_at.desc(), CallRecordRow.id.desc())
            .limit(limit)
        )
        return [call_record(r) for r in self._session.scalars(stmt)]

    def external_talk_seconds(self, client: str, since: datetime) -> float:
        stmt = select(func.coalesce(func.sum(CallRecordRow.talk_seconds), 0.0)).where(
            CallRecordRow.client == client,
            CallRecordRow.started_at >= as_utc(since),
            CallRecordRow.answered_by.like("external:%"),
        )
        return float(self._session.scalar(stmt) or 0.0)

    def apply_log(
        self, ops: Iterable[tuple[str, int, dict[str, Any]]], ids: dict[int, int]
    ) -> None:
        """See Store.apply_call_log."""
        # Coalesced: a record started in this batch is inserted with its later changes, all
        # new records in one multi-row INSERT, the other changes as one executemany UPDATE per
        # set of columns. This runs in a worker thread while the event loop routes calls, and
        # the fewer statements, the less it holds the GIL.
        new: dict[int, dict[str, Any]] = {}
        changes: dict[int, dict[str, Any]] = {}
        media: list[dict[str, Any]] = []
        transfers: list[dict[str, Any]] = []
        for kind, number, fields in ops:
            if kind == "media":  # by Call-ID: the relay's statistics come after the BYE
                media.append({"cid": fields["call_id"], "v_media": json.dumps(fields["media"])})
                continue
            if kind == "transfer":  # by Call-ID: the original call may have ended long before
                transfers.append({"cid": fields["call_id"], "from_cid": fields["from_call_id"]})
                continue
            if kind == "start":
                new[number] = {
                    "call_id": fields["call_id"], "client": fields.get("client"),
                    "number": fields["number"], "caller": fields["caller"],
                    "rule": fields.get("rule"), "step": fields.get("step"),
                    "answered_by": None, "answered_at": None, "ended_at": None,
                    "started_at": as_utc(fields["started_at"]), "ring_seconds": 0.0,
                    "talk_seconds": 0.0, "result": None, "end_reason": None,
                }  # fmt: skip
                continue
            check_call_update(fields)
            values = {k: as_utc(v) if isinstance(v, datetime) else v for k, v in fields.items()}
            if number in new:
                new[number].update(values)
            elif number in ids:
                changes.setdefault(number, {}).update(values)
            # else: its start was in a batch that failed: nothing to update
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for number, values in changes.items():
            params = {f"v_{k}": v for k, v in values.items()}
            params["rid"] = ids[number]
            groups.setdefault(tuple(sorted(values)), []).append(params)
        conn = self._session.connection()
        created: list[int] = []
        if new:
            result = conn.execute(
                insert(CallRecordRow).returning(CallRecordRow.id, sort_by_parameter_order=True),
                list(new.values()),
            )
            created = list(result.scalars())
        for columns, rows in groups.items():
            stmt = (
                update(CallRecordRow)
                .where(CallRecordRow.id == bindparam("rid"))
                .values({c: bindparam(f"v_{c}") for c in columns})
            )
            conn.execute(stmt, rows)
        if media:
            stmt = (
                update(CallRecordRow)
                .where(CallRecordRow.call_id == bindparam("cid"))
                .values(media=bindparam("v_media"))
            )
            conn.execute(stmt, media)
        for t in transfers:
            self._link_transfer(conn, t["cid"], t["from_cid"])
        self._uow.after_commit(lambda: ids.update(zip(new, created, strict=True)))

    @staticmethod
    def _link_transfer(conn: Any, call_id: str, from_call_id: str) -> None:
        """The newest record of `call_id` names the newest of `from_call_id` as the call it
        was transferred from; that one, if it already ended `answered`, becomes
        `transferred` (one still in progress gets it at its end from the call routing)."""
        newest = select(func.max(CallRecordRow.id))
        original = conn.execute(newest.where(CallRecordRow.call_id == from_call_id)).scalar()
        if original is None:
            return
        conn.execute(
            update(CallRecordRow)
            .where(CallRecordRow.id == newest.where(CallRecordRow.call_id == call_id)
                   .scalar_subquery())
            .values(transferred_from=original)
        )  # fmt: skip
        conn.execute(
            update(CallRecordRow)
            .where(CallRecordRow.id == original, CallRecordRow.result == "answered")
            .values(result=CallResult.TRANSFERRED)
        )

    def close_open(self, now: datetime) -> int:
        """Finish the records of calls cut off by a server stop (see Store)."""
        at = as_utc(now)
        rows = self._session.scalars(
            select(CallRecordRow).where(CallRecordRow.ended_at.is_(None))
        ).all()
        for row in rows:
            row.ended_at = at
            if row.answered_at is not None:
                answered = as_utc(row.answered_at)
                row.talk_seconds = max(0.0, (at - answered).total_seconds())
                row.ring_seconds = max(0.0, (answered - as_utc(row.started_at)).total_seconds())
                row.result = row.result or CallResult.ANSWERED
            else:
                row.ring_seconds = max(0.0, (at - as_utc(row.started_at)).total_seconds())
                row.result = row.result or CallResult.FAILED
            row.end_reason = row.end_reason or CallEndReason.SERVER_STOPPED
        return len(rows)


class PresenceRepository(Repository):
    """Presence subscriptions and publications, stored as the presence server wrote them."""

    def load(self, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        s = self._session
        s.execute(delete(PresenceSubscription).where(PresenceSubscription.expires_at <= now))
        s.execute(delete(PresencePublication).where(PresencePublication.expires_at <= now))
        subs = list(s.scalars(select(PresenceSubscription.data)))
        pubs = list(s.scalars(select(PresencePublication.data)))
        return subs, pubs

    def save(
        self,
        subs: Iterable[dict[str, Any]],
        gone_subs: Iterable[str],
        pubs: Iterable[dict[str, Any]],
        gone_pubs: Iterable[str],
    ) -> None:
        sub_rows = {
            d["key"]: {"key": d["key"], "presentity": d["presentity"], "watcher": d["watcher"],
                       "expires_at": d["expires_at"], "data": d}
            for d in subs
        }  # fmt: skip
        pub_rows = {
            d["etag"]: {"etag": d["etag"], "user": d["user"], "expires_at": d["expires_at"],
                        "data": d}
            for d in pubs
        }  # fmt: skip
        drop_subs = set(gone_subs) | set(sub_rows)
        drop_pubs = set(gone_pubs) | set(pub_rows)
        conn = self._session.connection()
        if drop_subs:
            conn.execute(
                delete(PresenceSubscription).where(PresenceSubscription.key.in_(drop_subs))
            )
        if drop_pubs:
            conn.execute(delete(PresencePublication).where(PresencePublication.etag.in_(drop_pubs)))
        if sub_rows:
            conn.execute(insert(PresenceSubscription), list(sub_rows.values()))
        if pub_rows:
            conn.execute(insert(PresencePublication), list(pub_rows.values()))
