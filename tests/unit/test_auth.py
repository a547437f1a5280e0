"""Digest authentication (heimbuero.sip.auth) checked against an independent client.

The client below is written from RFC 2617 §3.2.2 / RFC 7616 §3.4.1 with nothing but hashlib and
a regular expression, so a mistake in the server's formula cannot hide behind the same mistake
in the test.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heimbuero.sip import auth
from heimbuero.sip.auth import AuthResult, DigestAuthenticator, ha1, parse_credentials
from heimbuero.sip.message import Request, parse

REALM = "example.com"
SECRET = b"0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000.0
DATA = Path(__file__).resolve().parent.parent / "data" / "sip"

# ---- the independent client -------------------------------------------------------------------

_CHALLENGE_PARAM = re.compile(r'([A-Za-z-]+)=(?:"([^"]*)"|([^,\s]+))')


def parse_challenge(value: str) -> dict[str, str]:
    scheme, _, rest = value.partition(" ")
    assert scheme == "Digest"
    return {k.lower(): q if q else t for k, q, t in _CHALLENGE_PARAM.findall(rest)}


def _hex(algorithm: str, text: str) -> str:
    fn = hashlib.md5 if algorithm == "MD5" else hashlib.sha256
    return fn(text.encode()).hexdigest()


def client_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str | None = None,
    cnonce: str | None = None,
    qop: str | None = None,
) -> str:
    a1 = _hex(algorithm, f"{username}:{realm}:{password}")
    a2 = _hex(algorithm, f"{method}:{uri}")
    if qop is None:
        return _hex(algorithm, f"{a1}:{nonce}:{a2}")
    return _hex(algorithm, f"{a1}:{nonce}:{nc}:{cnonce}:{qop}:{a2}")


def authorization(
    challenge: str,
    username: str = "Alice",
    password: str = "correct horse",
    method: str = "REGISTER",
    uri: str = "sip:example.com",
    nc: int = 1,
    cnonce: str = "0a4f113b",
    use_qop: bool = True,
    send_algorithm: bool = True,
    **override: str,
) -> str:
    """The Authorization value a phone sends in answer to `challenge`."""
    ch = parse_challenge(challenge)
    alg = ch.get("algorithm", "MD5")
    qop = "auth" if use_qop else None
    nc_text = f"{nc:08x}"
    params = {
        "username": username,
        "realm": ch["realm"],
        "nonce": ch["nonce"],
        "uri": uri,
        "response": client_response(
            alg, username, ch["realm"], password, method, uri, ch["nonce"], nc_text, cnonce, qop
        ),
    }
    if send_algorithm:
        params["algorithm"] = alg
    if use_qop:
        params.update(qop="auth", nc=nc_text, cnonce=cnonce)
    params.update(override)
    unquoted = {"algorithm", "qop", "nc"}
    return "Digest " + ", ".join(
        f"{k}={v}" if k in unquoted else f'{k}="{v}"' for k, v in params.items()
    )


USERS = {"Alice": "correct horse", "bob": "battery staple"}


def store(users: dict[str, str] = USERS, realm: str = REALM) -> Callable[[str, str], str | None]:
    """A lookup_ha1 over precomputed HA1s (computed here, not with auth.ha1)."""
    table = {
        (name, alg): _hex(alg, f"{name}:{realm}:{pw}")
        for name, pw in users.items()
        for alg in ("MD5", "SHA-256")
    }
    return lambda username, algorithm: table.get((username, algorithm))


def make(**kw: object) -> DigestAuthenticator:
    return DigestAuthenticator(REALM, SECRET, **kw)  # type: ignore[arg-type]


# ---- known vectors ----------------------------------------------------------------------------


def test_rfc2617_section_3_5_example() -> None:
    # Mufasa / "Circle Of Life", qop=auth, nc=00000001, cnonce 0a4f113b (RFC 2617 §3.5).
    assert ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life") == (
        "939e7578ed9e3c518a452acee763bce9"
    )
    response = client_response(
        "MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001", "0a4f113b", "auth",
    )  # fmt: skip
    assert response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_example(algorithm: str, expected: str) -> None:
    nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    args = ("Mufasa", "http-auth@example.org", "Circle of Life")
    response = client_response(
        algorithm, *args, "GET", "/dir/index.html", nonce, "00000001", cnonce, "auth"
    )
    assert response == expected
    assert ha1(algorithm, *args) == _hex(algorithm, "Mufasa:http-auth@example.org:Circle of Life")


def test_ha1_names_and_rejects() -> None:
    assert ha1("md5", "a", "r", "p") == ha1("MD5", "a", "r", "p")
    assert len(ha1("sha-256", "a", "r", "p")) == 64
    for bad in ("MD5-sess", "SHA-256-sess", "SHA-512-256", ""):
        with pytest.raises(ValueError):
            ha1(bad, "a", "r", "p")


def test_rfc2617_vector_through_verify() -> None:
    """The RFC 2617 user, realm and password authenticate against a nonce of ours."""
    a = DigestAuthenticator("testrealm@host.com", SECRET, ("MD5",))
    [challenge] = a.challenges(T0)
    value = authorization(
        challenge, "Mufasa", "Circle Of Life", method="GET", uri="/dir/index.html"
    )
    lookup = store({"Mufasa": "Circle Of Life"}, realm="testrealm@host.com")
    assert a.verify("GET", value, T0 + 1, lookup) == AuthResult(True, "Mufasa")


# ---- challenges -------------------------------------------------------------------------------


def test_challenges_follow_configured_order() -> None:
    assert [parse_challenge(c)["algorithm"] for c in make().challenges(T0)] == ["MD5", "SHA-256"]
    swapped = make(algorithms=("SHA-256", "MD5")).challenges(T0)
    assert [parse_challenge(c)["algorithm"] for c in swapped] == ["SHA-256", "MD5"]
    only = make(algorithms=["sha-256"]).challenges(T0)
    assert [parse_challenge(c)["algorithm"] for c in only] == ["SHA-256"]


def test_challenge_format() -> None:
    a = make()
    first, second = a.challenges(T0)
    assert re.fullmatch(
        r'Digest realm="example\.com", nonce="[A-Za-z0-9_-]{48}", algorithm=MD5, qop="auth"',
        first,
    )
    ch1, ch2 = parse_challenge(first), parse_challenge(second)
    assert ch1["nonce"] == ch2["nonce"]  # one nonce for the whole 401
    assert ch1["realm"] == REALM and ch1["qop"] == "auth"
    assert "stale" not in ch1
    assert a.challenges(T0)[0] != first  # a fresh nonce every time
    stale = a.challenges(T0, stale=True)
    assert all(c.endswith(", stale=true") for c in stale)
    # The challenge is what parse_credentials reads too (same auth-param grammar).
    assert parse_credentials(first) == ch1


def test_realm_is_quoted() -> None:
    a = DigestAuthenticator('we "quote" \\ it', SECRET)
    c = a.challenges(T0)[0]
    assert c.startswith('Digest realm="we \\"quote\\" \\\\ it", ')
    assert parse_credentials(c)["realm"] == 'we "quote" \\ it'  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": b""},
        {"realm": ""},
        {"realm": "a\r\nb"},
        {"algorithms": ()},
        {"algorithms": ("MD5-sess",)},
        {"algorithms": ("SHA-512",)},
        {"nonce_ttl": 0},
        {"nonce_ttl": float("nan")},
        {"max_tracked_nonces": 0},
    ],
)
def test_bad_configuration(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"realm": REALM, "secret": SECRET, **kwargs}
    with pytest.raises(ValueError):
        DigestAuthenticator(**args)  # type: ignore[arg-type]


# ---- verify: success ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_verify_ok(algorithm: str) -> None:
    a = make(algorithms=(algorithm,))
    calls: list[tuple[str, str]] = []
    lookup = store()

    def spy(username: str, alg: str) -> str | None:
        calls.append((username, alg))
        return lookup(username, alg)

    [challenge] = a.challenges(T0)
    result = a.verify("REGISTER", authorization(challenge), T0 + 5, spy)
    assert result == AuthResult(True, "Alice")  # case kept: the caller compares with the AOR
    assert calls == [("Alice", algorithm)]


def test_client_picks_second_challenge() -> None:
    a = make()
    _, sha = a.challenges(T0)
    assert a.verify("INVITE", authorization(sha, method="INVITE"), T0, store()).ok


def test_absent_algorithm_means_md5() -> None:
    a = make()
    md5, _ = a.challenges(T0)
    value = authorization(md5, send_algorithm=False)
    assert "algorithm" not in parse_credentials(value)  # type: ignore[operator]
    assert a.verify("REGISTER", value, T0, store()).ok
    # An MD5 answer without algorithm parameter, to a server that offers only SHA-256: refused.
    sha_only = make(algorithms=("SHA-256",))
    [sha] = sha_only.challenges(T0)
    value = authorization(sha.replace("SHA-256", "MD5"), send_algorithm=False)
    r = sha_only.verify("REGISTER", value, T0, store())
    assert not r.ok and not r.stale


def test_method_and_uri_are_covered() -> None:
    a = make()
    value = authorization(a.challenges(T0)[0], method="REGISTER")
    assert not a.verify("INVITE", value, T0, store()).ok
    tampered = value.replace('uri="sip:example.com"', 'uri="sip:evil.example.com"')
    assert not make().verify("REGISTER", tampered, T0, store()).ok


def test_quoted_values_with_escapes_and_odd_spacing() -> None:
    a = make()
    ch = parse_challenge(a.challenges(T0)[0])
    user = 'o"brien\\x'
    lookup = store({user: "pw"})
    args = ("REGISTER", "sip:example.com", ch["nonce"], "00000001", "c", "auth")
    resp = client_response("MD5", user, REALM, "pw", *args)
    value = (
        f'  digest   USERNAME = "o\\"brien\\\\x" ,realm="{REALM}",, nonce="{ch["nonce"]}",'
        f' uri="sip:example.com" , response="{resp.upper()}", qop=auth, NC=00000001,'
        ' cnonce="c", algorithm=md5, opaque="ignored"'
    )
    assert a.verify("REGISTER", value, T0, lookup) == AuthResult(True, user)


# ---- nonce lifetime ---------------------------------------------------------------------------


def test_stale_after_ttl() -> None:
    a = make(nonce_ttl=300.0)
    challenge = a.challenges(T0)[0]
    assert a.verify("REGISTER", authorization(challenge), T0 + 300.0, store()).ok
    late = a.verify("REGISTER", authorization(challenge, nc=2), T0 + 300.5, store())
    assert late == AuthResult(False, "Alice", stale=True, reason=late.reason)
    # Stale is only said for a correct digest: a wrong password on an old nonce is just wrong.
    wrong = a.verify("REGISTER", authorization(challenge, password="x", nc=3), T0 + 400, store())
    assert not wrong.ok and not wrong.stale
    # A nonce first used after its lifetime is stale too.
    unused = a.challenges(T0 + 1)[0]
    r = a.verify("REGISTER", authorization(unused), T0 + 302, store())
    assert not r.ok and r.stale
    # A fresh challenge works again.
    fresh = a.challenges(T0 + 400, stale=True)[0]
    assert a.verify("REGISTER", authorization(fresh), T0 + 400, store()).ok


@pytest.mark.parametrize(
    "mangle",
    [
        lambda n: ("A" if n[5] != "A" else "B").join((n[:5], n[6:])),  # one character changed
        lambda n: n[:-1] + ("A" if n[-1] != "A" else "B"),  # the MAC's last character
        lambda n: n + "AAAA",
        lambda n: n[:-4],
        lambda n: "x" * 48,
        lambda n: "ü" * 48,
    ],
)
def test_bad_mac_is_invalid_not_stale(mangle: Callable[[str], str]) -> None:
    a = make()
    challenge = a.challenges(T0)[0]
    nonce = parse_challenge(challenge)["nonce"]
    bad = challenge.replace(nonce, mangle(nonce))
    assert bad != challenge
    result = a.verify("REGISTER", authorization(bad), T0 + 1000, store())
    assert not result.ok and not result.stale


def test_nonce_must_be_canonical_base64url() -> None:
    """'+' and '/' decode like '-' and '_' in Python's lenient decoder; only one spelling counts."""
    a = make()
    for _ in range(100):
        challenge = a.challenges(T0)[0]
        nonce = parse_challenge(challenge)["nonce"]
        if "-" in nonce or "_" in nonce:
            break
    else:
        pytest.fail("no nonce with '-' or '_' in 100 tries")
    respelled = nonce.replace("-", "+").replace("_", "/")
    assert base64.urlsafe_b64decode(respelled) == base64.urlsafe_b64decode(nonce)
    r = a.verify("REGISTER", authorization(challenge.replace(nonce, respelled)), T0, store())
    assert not r.ok and not r.stale
    assert a.verify("REGISTER", authorization(challenge), T0, store()).ok


def test_nonce_is_bound_to_secret_and_realm() -> None:
    other_secret = DigestAuthenticator(REALM, b"another secret of sufficient size")
    challenge = other_secret.challenges(T0)[0]
    r = make().verify("REGISTER", authorization(challenge), T0, store())
    assert not r.ok and not r.stale
    # Same secret, other realm: the MAC covers the realm.
    sibling = DigestAuthenticator("other.example", SECRET)
    challenge = sibling.challenges(T0)[0].replace("other.example", REALM)
    r = make().verify("REGISTER", authorization(challenge), T0, store())
    assert not r.ok and not r.stale


# ---- nonce counts -----------------------------------------------------------------------------


def test_replayed_nc_is_rejected_and_increasing_nc_accepted() -> None:
    a = make()
    challenge = a.challenges(T0)[0]
    first = authorization(challenge, nc=1)
    assert a.verify("REGISTER", first, T0, store()).ok
    replay = a.verify("REGISTER", first, T0 + 1, store())
    # stale=true: a phone retries with a fresh nonce instead of asking for the password again
    assert not replay.ok and replay.stale and replay.username == "Alice"
    assert a.verify("REGISTER", authorization(challenge, nc=2), T0 + 2, store()).ok
    assert a.verify("REGISTER", authorization(challenge, nc=7), T0 + 3, store()).ok  # gaps ok
    older = a.verify("REGISTER", authorization(challenge, nc=5), T0 + 4, store())
    assert not older.ok and older.stale  # out of order: the same
    assert a.verify("INVITE", authorization(challenge, method="INVITE", nc=8), T0 + 5, store()).ok


def test_failed_attempts_do_not_burn_nonce_counts() -> None:
    a = make()
    challenge = a.challenges(T0)[0]
    attacker = authorization(challenge, password="guess", nc=0xFFFFFFFF)
    assert not a.verify("REGISTER", attacker, T0, store()).ok
    assert a.verify("REGISTER", authorization(challenge, nc=1), T0, store()).ok


@pytest.mark.parametrize("nc", ["00000000", "1", "0000000g", "000000001", ""])
def test_bad_nc(nc: str) -> None:
    a = make()
    value = authorization(a.challenges(T0)[0], nc=1)
    value = value.replace("nc=00000001", f"nc={nc}" if nc else 'nc=""')
    r = a.verify("REGISTER", value, T0, store())
    assert not r.ok and not r.stale


def test_qop_less_md5_once_only() -> None:
    a = make()
    challenge = a.challenges(T0)[0]
    value = authorization(challenge, use_qop=False)
    assert "qop" not in value and "nc=" not in value
    compat = {"allow_rfc2069": lambda user: True}
    assert a.verify("REGISTER", value, T0, store(), **compat) == AuthResult(True, "Alice")
    again = a.verify("REGISTER", value, T0 + 1, store(), **compat)
    assert again == AuthResult(False, "Alice", stale=True, reason=again.reason)
    # A spent nonce stays spent for qop=auth answers too.
    with_qop = a.verify("REGISTER", authorization(challenge, nc=1), T0 + 2, store())
    assert not with_qop.ok and with_qop.stale


def test_qop_less_after_qop_use_is_stale() -> None:
    a = make()
    challenge = a.challenges(T0)[0]
    assert a.verify("REGISTER", authorization(challenge), T0, store()).ok
    value = authorization(challenge, use_qop=False)
    r = a.verify("REGISTER", value, T0, store(), allow_rfc2069=lambda user: True)
    assert not r.ok and r.stale


def test_qop_less_sha256_refused() -> None:
    a = make()
    sha = a.challenges(T0)[1]
    r = a.verify("REGISTER", authorization(sha, use_qop=False), T0, store())
    assert not r.ok and not r.stale


def test_tracking_is_bounded_and_eviction_never_reopens_replay() -> None:
    a = make(max_tracked_nonces=2)
    chs = [a.challenges(T0 + i)[0] for i in range(3)]
    for ch in chs:
        assert a.verify("REGISTER", authorization(ch, nc=1), T0 + 10, store()).ok
    assert a.tracked_nonces == 2
    # The oldest nonce was evicted: its nc history is gone, so it is stale (never accepted again).
    for nc in (1, 2):
        r = a.verify("REGISTER", authorization(chs[0], nc=nc), T0 + 11, store())
        assert not r.ok and r.stale
    # The tracked ones go on normally.
    assert a.verify("REGISTER", authorization(chs[2], nc=2), T0 + 12, store()).ok
    assert not a.verify("REGISTER", authorization(chs[2], nc=2), T0 + 12, store()).ok


def test_expired_nonces_are_forgotten() -> None:
    a = make(nonce_ttl=60.0)
    for i in range(5):
        ch = a.challenges(T0 + i)[0]
        assert a.verify("REGISTER", authorization(ch), T0 + i, store()).ok
    assert a.tracked_nonces == 5
    ch = a.challenges(T0 + 100)[0]
    assert a.verify("REGISTER", authorization(ch), T0 + 100, store()).ok
    assert a.tracked_nonces == 1


# ---- failures that must look alike -------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_unknown_user_and_wrong_password_look_and_cost_the_same(
    algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make(algorithms=(algorithm,))
    counted: list[str] = []
    real_h = auth._h

    def counting_h(alg: str, text: str) -> str:
        counted.append(alg)
        return real_h(alg, text)

    monkeypatch.setattr(auth, "_h", counting_h)
    [challenge] = a.challenges(T0)
    lookups: list[str] = []

    def lookup(username: str, alg: str) -> str | None:
        lookups.append(username)
        return store()(username, alg)

    wrong = a.verify("REGISTER", authorization(challenge, "bob", "wrong"), T0, lookup)
    hashes_wrong, counted[:] = list(counted), []
    unknown = a.verify("REGISTER", authorization(challenge, "carol", "wrong"), T0, lookup)
    hashes_unknown = list(counted)

    assert (wrong.ok, wrong.stale, unknown.ok, unknown.stale) == (False, False, False, False)
    assert dataclasses.replace(wrong, username=None, reason="") == dataclasses.replace(
        unknown, username=None, reason=""
    )
    assert (wrong.username, unknown.username) == ("bob", "carol")
    assert wrong.reason != unknown.reason  # the log may say which; the peer never sees it
    assert hashes_wrong == hashes_unknown == [algorithm, algorithm]  # HA2 and the response
    assert lookups == ["bob", "carol"]
    # And with the same name: one store knows bob, the other does not.
    value = authorization(challenge, "bob", "wrong", nc=2)
    r1 = a.verify("REGISTER", value, T0, store())
    r2 = a.verify("REGISTER", value, T0, store({"alice": "x"}))
    assert dataclasses.replace(r1, reason="") == dataclasses.replace(r2, reason="")


def test_unknown_user_with_stale_nonce_is_not_stale() -> None:
    a = make(nonce_ttl=10.0)
    challenge = a.challenges(T0)[0]
    r = a.verify("REGISTER", authorization(challenge, "nobody"), T0 + 100, store())
    assert not r.ok and not r.stale


def test_realm_checks() -> None:
    a = make()
    challenge = a.challenges(T0)[0]
    value = authorization(challenge, realm="EXAMPLE.COM")
    r = a.verify("REGISTER", value, T0, store())
    assert not r.ok and not r.stale
    # Without the realm comparison the stored HA1 (for our realm) alone decides.
    assert a.verify("REGISTER", value, T0, store(), expected_realm_only=False).ok


@pytest.mark.parametrize(
    "edit",
    [
        {"algorithm": "MD5-sess"},
        {"algorithm": "SHA-256-sess"},
        {"algorithm": "SHA-512-256"},
        {"algorithm": "token-nobody-knows"},
        {"qop": "auth-int"},
        {"qop": "auth,auth-int"},
        {"cnonce": ""},
        {"uri": ""},
        {"username": ""},
        {"response": "0" * 31},
        {"response": "z" * 32},
        {"response": "0" * 64},
        {"nonce": ""},
        {"userhash": "true", "username": "not-a-hash"},
    ],
)
def test_refused_parameters(edit: dict[str, str]) -> None:
    a = make()
    value = authorization(a.challenges(T0)[0], **edit)  # type: ignore[arg-type]
    r = a.verify("REGISTER", value, T0, store())
    assert not r.ok and not r.stale


@pytest.mark.parametrize("missing", ["username", "realm", "nonce", "uri", "response"])
def test_missing_parameter(missing: str) -> None:
    a = make()
    value = authorization(a.challenges(T0)[0])
    value = re.sub(rf'(^Digest |, ){missing}="[^"]*"', r"\1", value).replace("Digest , ", "Digest ")
    assert f"{missing}=" not in value.replace("cnonce=", "")
    r = a.verify("REGISTER", value, T0, store())
    assert not r.ok and not r.stale


def test_lookup_not_called_for_garbage() -> None:
    a = make()

    def lookup(username: str, algorithm: str) -> str | None:
        raise AssertionError("no lookup for a nonce we did not issue")

    value = authorization(a.challenges(T0)[0]).replace('nonce="', 'nonce="x')
    assert not a.verify("REGISTER", value, T0, lookup).ok


# ---- parse_credentials -------------------------------------------------------------------------


def test_parse_credentials_examples() -> None:
    assert parse_credentials(
        'Digest username="Mufasa", realm="testrealm@host.com", qop=auth, nc=00000001,'
        ' uri="/dir/index.html", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    ) == {
        "username": "Mufasa",
        "realm": "testrealm@host.com",
        "qop": "auth",
        "nc": "00000001",
        "uri": "/dir/index.html",
        "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
    }
    assert parse_credentials("DIGEST Username=x") == {"username": "x"}
    assert parse_credentials("Digest") == {}
    assert parse_credentials("Digest   ") == {}
    assert parse_credentials('Digest a="x, y=\\"z\\"", b = c ,, ') == {"a": 'x, y="z"', "b": "c"}
    assert parse_credentials('Digest uri="sip:a@b;transport=tcp"') == {
        "uri": "sip:a@b;transport=tcp"
    }


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Basic dXNlcjpwYXNz",
        "NoOneKnowsThisScheme opaque-data=here",
        "Digestusername=x",
        'Digest username="x", username="y"',
        'Digest Username="x", username="x"',
        'Digest username="unterminated',
        "Digest username",
        "Digest username=",
        "Digest =x",
        'Digest username="a" realm="b"',
        "Digest dXNlcjpwYXNz",
        'Digest username="a"junk',
    ],
)
def test_parse_credentials_refuses(value: str) -> None:
    assert parse_credentials(value) is None
    r = make().verify("REGISTER", value, T0, store())
    assert not r.ok and not r.stale


def test_torture_regaut01_unknown_scheme() -> None:
    """RFC 4475 §3.3.7: an Authorization with an unknown scheme is simply not ours."""
    msg = parse((DATA / "rfc4475" / "regaut01.dat").read_bytes())
    assert isinstance(msg, Request)
    value = msg.get("authorization")
    assert value == "NoOneKnowsThisScheme opaque-data=here"
    assert parse_credentials(value) is None
    r = make().verify("REGISTER", value, T0, store())
    assert (r.ok, r.username, r.stale) == (False, None, False)


# ---- nothing raises ---------------------------------------------------------------------------

_any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
_param_text = st.text(
    st.sampled_from(list('abcdefxyz0189"\\,= \t;:@<>/-_\x00é\udcff')), max_size=40
)


@settings(max_examples=400, deadline=None)
@given(_any_text)
def test_random_strings_never_raise(value: str) -> None:
    result = parse_credentials(value)
    assert result is None or isinstance(result, dict)
    for v in (value, "Digest " + value):
        r = make().verify("REGISTER", v, T0, store())
        assert isinstance(r, AuthResult) and not r.ok


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "cnonce"]
        ),
        _param_text,
    ),
    st.booleans(),
)
def test_mangled_parameters_never_raise(edit: dict[str, str], quote_all: bool) -> None:
    a = make()
    challenge = a.challenges(T0)[0]
    params = parse_credentials(authorization(challenge))
    assert params is not None
    params.update(edit)

    def fmt(v: str) -> str:
        if quote_all or not v or any(c in v for c in ' \t,"\\'):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return v

    value = "Digest " + ", ".join(f"{k}={fmt(v)}" for k, v in params.items())
    r = a.verify("REGISTER", value, T0, store())
    assert isinstance(r, AuthResult)
    assert parse_credentials(value) == params


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_uri_octets_are_hashed_as_received(raw: bytes) -> None:
    """Header values arrive decoded with surrogateescape; the phone hashed the raw octets."""
    a = make(algorithms=("MD5",))
    nonce = parse_challenge(a.challenges(T0)[0])["nonce"]
    a1 = _hex("MD5", f"Alice:{REALM}:correct horse")
    a2 = hashlib.md5(b"REGISTER:" + raw).hexdigest()
    response = _hex("MD5", f"{a1}:{nonce}:00000001:c:auth:{a2}")
    uri = raw.decode("utf-8", "surrogateescape").replace("\\", "\\\\").replace('"', '\\"')
    value = (
        f'Digest username="Alice", realm="{REALM}", nonce="{nonce}", uri="{uri}",'
        f' response="{response}", qop=auth, nc=00000001, cnonce="c"'
    )
    assert a.verify("REGISTER", value, T0, store()).ok == bool(raw)


# ---- digest uri (RFC 3261 §22.4) and RFC 2069 compatibility ---------------------------------


def test_digest_uri_must_name_the_request_uri() -> None:
    a = make()
    challenge = a.challenges(T0)[0]
    value = authorization(challenge, uri="sip:other.example.com")
    r = a.verify("REGISTER", value, T0, store(), request_uri="sip:example.com")
    assert not r.ok and r.status == 400 and "uri" in r.public and not r.guess
    # The same credentials with the right uri pass.
    good = authorization(challenge, uri="sip:example.com")
    assert a.verify("REGISTER", good, T0, store(), request_uri="sip:example.com").ok


@pytest.mark.parametrize(
    ("digest_uri", "request_uri", "same"),
    [
        ("sip:example.com", "sip:EXAMPLE.com", True),
        ("sip:bob@example.com;transport=udp", "sip:bob@example.com;transport=UDP", True),
        ("sip:%62ob@example.com", "sip:bob@example.com", True),
        ("sip:bob@example.com;foo=1", "sip:bob@example.com", True),  # other params ignored
        ("sip:bob@example.com", "sip:Bob@example.com", False),  # user part is case-sensitive
        ("sip:bob@example.com:5060", "sip:bob@example.com", False),
        ("sip:bob@example.com;transport=tcp", "sip:bob@example.com", False),
        ("sips:bob@example.com", "sip:bob@example.com", False),
        ("sip:bob@evil.example", "sip:bob@example.com", False),
        ("not a uri", "sip:bob@example.com", False),
    ],
)
def test_same_uri(digest_uri: str, request_uri: str, same: bool) -> None:
    assert auth.same_uri(digest_uri, request_uri) is same


def test_rfc2069_refused_unless_the_user_may() -> None:
    a = make()
    challenge = a.challenges(T0)[0]
    value = authorization(challenge, use_qop=False)
    r = a.verify("REGISTER", value, T0, store())
    assert not r.ok and r.status == 403 and "qop" in r.public and not r.guess
    r = a.verify("REGISTER", value, T0, store(), allow_rfc2069=lambda user: user != "Alice")
    assert not r.ok and r.status == 403
    assert a.verify("REGISTER", value, T0, store(), allow_rfc2069=lambda user: True).ok


def test_only_wrong_answers_to_our_nonces_are_guesses() -> None:
    a = make()
    challenge = a.challenges(T0)[0]
    wrong = a.verify("REGISTER", authorization(challenge, password="nope"), T0, store())
    assert not wrong.ok and wrong.guess
    garbage = authorization(challenge, nonce="A" * 48)
    r = a.verify("REGISTER", garbage, T0, store())
    assert not r.ok and not r.guess and r.reason == "nonce not issued by us"
