"""The console's chat (/chat) in a real browser against the real server: text and a file
between an agent and a client, live on both sides, a SIP phone's MESSAGE too; and the
refusals (CSRF, other businesses' users and files, sizes) over HTTP with a console session."""

from __future__ import annotations

import io
import os
import re
import secrets
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Server, SipClient, set_toml_option

from .conftest import login

pytestmark = [pytest.mark.e2e]

MB = 1024 * 1024
# scripts/screenshots sets this to docs/: the pages as the test left them, in German
SHOTS = os.environ.get("HEIMBUERO_SCREENSHOTS", "")


def dictation_wav(seconds: float = 0.5) -> bytes:
    """A small WAV (8 kHz, 16 bit, mono) with a little noise in it, like a short dictation."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(secrets.token_bytes(int(8000 * seconds) * 2))
    return buf.getvalue()


def stored_files(srv: Server) -> tuple[set[str], list[str]]:
    """(stored file names, names in tmp/)"""
    root = srv.data_dir / "files"
    stored = {p.name for p in root.iterdir() if p.is_file()}
    return stored, sorted(p.name for p in (root / "tmp").iterdir())


def chat_ready(page: Any) -> None:
    """The page's event stream is open and its chat list was fetched after it opened."""
    # (a locator, not wait_for_function: a string function is eval, which the page's CSP forbids)
    page.locator("html[data-chat='1']").wait_for(state="attached", timeout=15_000)


def test_agent_and_client_chat_with_a_file_live(browser: Any, demo: Server, tmp_path: Path) -> None:
    owner = browser.new_context(
        locale="de-DE", viewport={"width": 360, "height": 740}, accept_downloads=True
    )
    agent = browser.new_context(locale="de-DE", accept_downloads=True)
    try:
        chat_both_ways(demo, owner.new_page(), agent.new_page(), tmp_path)
    finally:  # open event streams would hold up the server's stop
        owner.close()
        agent.close()


def chat_both_ways(demo: Server, client: Any, console: Any, tmp_path: Path) -> None:
    login(client, demo, "mueller")
    client.get_by_role("link", name="Nachrichten", exact=True).click()
    client.wait_for_url(re.compile(r"/chat$"))
    chat_ready(client)
    assert client.evaluate("document.documentElement.scrollWidth") <= 360

    login(console, demo, "anna")
    console.get_by_role("link", name="Nachrichten", exact=True).click()
    console.get_by_role("link", name="Neue Nachricht").click()
    console.get_by_role("link", name="mueller", exact=True).click()
    console.wait_for_url(re.compile(r"/chat/mueller$"))
    chat_ready(console)
    console.get_by_label("Nachricht", exact=True).fill("Ihr Diktat bitte bis heute Abend.")
    console.get_by_role("button", name="Senden", exact=True).click()
    console.wait_for_url(re.compile(r"/chat/mueller$"))
    mine = console.locator("#chat-log li.msg.mine")
    assert "Ihr Diktat bitte bis heute Abend." in mine.last.inner_text()
    chat_ready(console)

    # the client's open list shows the new conversation without a reload
    conv = client.locator("#chat-list li", has_text="Ihr Diktat bitte")
    conv.wait_for(timeout=10_000)
    assert conv.locator(".badge").inner_text() == "1 neu"  # unread
    client.get_by_role("link", name="anna", exact=True).click()
    client.wait_for_url(re.compile(r"/chat/anna$"))
    chat_ready(client)
    assert "Ihr Diktat bitte bis heute Abend." in client.locator("#chat-log").inner_text()
    # opened is read: anna's open page says so without a reload, the client's list no more "neu"
    console.locator("#chat-log li.msg.mine .state", has_text="gelesen").wait_for(timeout=10_000)
    assert "badge" not in client.request.get(demo.http_url + "/chat?part=list").text()
    assert client.evaluate("document.documentElement.scrollWidth") <= 360

    # the client answers with a dictation; anna's open page shows it live, and she gets it
    wav = dictation_wav()
    client.get_by_label("Datei anhängen").set_input_files(
        files=[{"name": "diktat-meier.wav", "mimeType": "audio/wav", "buffer": wav}]
    )
    client.get_by_role("button", name="Datei senden").click()
    client.wait_for_url(re.compile(r"/chat/anna$"))
    assert "diktat-meier.wav" in client.locator("#chat-log li.msg.mine").last.inner_text()

    link = console.get_by_role("link", name="diktat-meier.wav")
    link.wait_for(timeout=10_000)
    item = console.locator("#chat-log li.msg", has=link)
    assert "mueller" in item.inner_text()
    with console.expect_download() as got:
        link.click()
    target = tmp_path / "got.wav"
    got.value.save_as(target)
    assert target.read_bytes() == wav

    # a SIP phone of the client sends a MESSAGE: it shows up on anna's page too
    with SipClient(demo.port) as phone:
        aor = f"sip:mueller@{demo.domain}"
        _, resp = phone.authenticated_request(
            "MESSAGE", f"sip:anna@{demo.domain}", username="mueller",
            password=demo.users["mueller"], from_uri=aor, to_uri=f"sip:anna@{demo.domain}",
            body=b"Vom Tischtelefon gesendet", content_type="text/plain",
        )  # fmt: skip
        assert resp.status in (200, 202), resp.summary()
    console.locator("#chat-log li.msg", has_text="Vom Tischtelefon gesendet").wait_for(
        timeout=10_000
    )
    if SHOTS:
        client.reload()
        client.screenshot(path=str(Path(SHOTS) / "console-chat.png"), full_page=True)


# -- refusals over HTTP, with a console session --------------------------------------------


def session(srv: Server, name: str) -> httpx.Client:
    """An HTTP client logged in to the console as `name` (cookies kept); `.csrf` is set."""
    http = httpx.Client(base_url=srv.http_url, timeout=15, follow_redirects=False)
    page = http.get("/")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    r = http.post(
        "/login", data={"csrf": token.group(1), "name": name, "password": srv.users[name]}
    )
    assert r.status_code == 303, r.text
    chat = http.get("/chat")
    found = re.search(r'name="csrf" value="([^"]+)"', chat.text)
    assert found is not None
    http.csrf = found.group(1)  # type: ignore[attr-defined]
    return http


def main_of(r: httpx.Response) -> tuple[int, str]:
    """Status and the page's <main> (the rest names the page's own path)."""
    found = re.search(r"<main>.*</main>", r.text, re.S)
    return r.status_code, found.group(0) if found else r.text


def api_history(srv: Server, name: str, peer: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{srv.http_url}/api/conversations/{peer}/messages",
        auth=(name, srv.users[name]),
        timeout=10,
    )
    return [] if r.status_code == 404 else list(r.json())


def test_chat_refusals(tmp_path: Path) -> None:
    srv = Server(tmp_path / "server", demo=True, http=True)
    srv.prepare()
    set_toml_option(srv.config_path, "files", "max_size_mb", 1)
    with srv:
        mueller = session(srv, "mueller")
        csrf = mueller.csrf  # type: ignore[attr-defined]
        wav = dictation_wav(0.1)

        # no CSRF token: 403, and nothing is stored
        r = mueller.post("/chat/anna", data={"text": "ohne Token"})
        assert r.status_code == 403
        r = mueller.post("/chat/anna", data={"text": "falsches Token", "csrf": "x" * 43})
        assert r.status_code == 403
        r = mueller.post("/chat/anna/file", files={"file": ("a.wav", wav, "audio/wav")})
        assert r.status_code == 403
        assert api_history(srv, "mueller", "anna") == []
        assert stored_files(srv) == (set(), [])

        # another business's user answers like a user that does not exist
        missing = mueller.get("/chat/niemand")
        assert missing.status_code == 404
        for path in ("/chat/schulz", "/chat/schulz/messages"):
            r = mueller.get(path)
            assert main_of(r) == main_of(missing), path
        r = mueller.post("/chat/schulz", data={"text": "Hallo", "csrf": csrf})
        assert main_of(r) == main_of(missing)
        r = mueller.post(
            f"/chat/schulz/file?csrf={csrf}", files={"file": ("a.wav", wav, "audio/wav")}
        )
        assert main_of(r) == main_of(missing)
        assert stored_files(srv) == (set(), [])
        assert "schulz" not in mueller.get("/chat?new=1").text

        # another business's file: the same 404 as a missing one
        up = httpx.post(
            f"{srv.http_url}/api/files",
            auth=("schulz", srv.users["schulz"]),
            files={"file": ("geheim.txt", b"nur fuer Schulz")},
            timeout=10,
        )
        assert up.status_code == 201, up.text
        theirs = up.json()["id"]
        nofile = mueller.get("/chat-files/" + "A" * 43)
        assert nofile.status_code == 404
        r = mueller.get(f"/chat-files/{theirs}")
        assert main_of(r) == main_of(nofile)
        assert b"nur fuer" not in r.content

        # too large a file: 413 with the reason on the page, and nothing left behind
        before = stored_files(srv)
        big = secrets.token_bytes(MB + 200 * 1024)
        r = mueller.post(
            f"/chat/anna/file?csrf={csrf}", files={"file": ("gross.wav", big, "audio/wav")}
        )
        assert r.status_code == 413
        assert "Die Datei ist zu groß" in r.text and "1.0 MB" in r.text
        assert stored_files(srv) == before
        assert api_history(srv, "mueller", "anna") == []

        # too long a text: the messenger's limit, said on the page (4xx), the text kept
        long = "Sehr lange Nachricht. " * 1000
        r = mueller.post("/chat/anna", data={"text": long, "csrf": csrf})
        assert r.status_code == 413, r.status_code
        assert "Die Nachricht wurde nicht gesendet" in r.text and "16384" in r.text
        assert api_history(srv, "mueller", "anna") == []

        # the page in English
        english = mueller.get("/chat?new=1", headers={"Accept-Language": "en"}).text
        assert "New message" in english and "Who do you want to write to?" in english
        assert ">anna<" in english and ">ben<" in english

        # and a good one goes through
        r = mueller.post("/chat/anna", data={"text": "Guten Tag", "csrf": csrf})
        assert r.status_code == 303
        assert [m["text"] for m in api_history(srv, "mueller", "anna")] == ["Guten Tag"]
        mueller.close()

        # unread for anna until she reads it (the API as the page); mueller's side unchanged
        def unread(name: str) -> dict[str, int]:
            r = httpx.get(f"{srv.http_url}/api/conversations", auth=(name, srv.users[name]),
                          timeout=10)  # fmt: skip
            return {c["peer"]: c["unread"] for c in r.json()}

        assert unread("anna") == {"mueller": 1} and unread("mueller") == {"anna": 0}
        read = f"{srv.http_url}/api/conversations/mueller/read"
        r = httpx.post(read, auth=("anna", srv.users["anna"]), timeout=10)
        assert r.json() == {"read": 1}, r.text
        assert httpx.post(read, auth=("anna", srv.users["anna"]), timeout=10).json() == {"read": 0}
        assert unread("anna") == {"mueller": 0}
        assert [m["imdn_state"] for m in api_history(srv, "mueller", "anna")] == ["displayed"]
