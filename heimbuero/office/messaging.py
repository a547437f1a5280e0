"""What an instant message says, independent of how it travelled: plain text, CPIM envelopes
(RFC 3862) with IMDN requests and reports (RFC 5438), is-composing notices (RFC 3994), and the
RCS file-transfer documents that announce a file on the HTTP file-transfer service.

Pure functions over bytes; SIP and HTTP both use them to store and show history.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TEXT = "text/plain"
CPIM = "message/cpim"
IMDN = "message/imdn+xml"
IS_COMPOSING = "application/im-iscomposing+xml"
FILE_TRANSFER = "application/vnd.gsma.rcs-ft-http+xml"
ACCEPTED_TYPES = (TEXT, CPIM, IMDN, IS_COMPOSING, FILE_TRANSFER)

_NS_FT = "{urn:gsma:params:xml:ns:rcs:rcs:fthttp}"
_NS_IMDN = "{urn:ietf:params:xml:ns:imdn}"
IMDN_STATES = ("delivered", "displayed", "processed", "failed", "forbidden", "error", "stored")


class MessageError(ValueError):
    """A message body that cannot be what its Content-Type says."""


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One file an RCS file-transfer document announces."""

    url: str
    name: str | None = None
    size: int | None = None
    content_type: str | None = None
    until: str | None = None


@dataclass(frozen=True, slots=True)
class MessageContent:
    """What a message body means.

    kind: text, file, imdn (a delivery/display report), composing (typing notice), other."""

    kind: str
    text: str | None = None
    files: tuple[FileInfo, ...] = ()
    imdn_id: str | None = None  # this message's imdn.Message-ID (CPIM)
    wants_reports: tuple[str, ...] = ()  # imdn.Disposition-Notification values
    report_for: str | None = None  # the message a report is about
    report_state: str | None = None  # delivered, displayed, …
    cpim_from: str | None = None  # the CPIM From header's URI
    inner_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # CPIM message headers, lower-case


CONTENT_CODINGS = ("deflate", "gzip", "identity")


def decode_body(content_encoding: str, body: bytes, limit: int) -> bytes:
    """The body without its content codings (RFC 3261 §20.12: Linphone deflates its IMDN
    reports). MessageError for an unknown coding or data that is not what it claims;
    OverflowError when the decoded body is longer than `limit` (no inflating of bombs)."""
    import zlib

    for coding in reversed([c.strip().lower() for c in content_encoding.split(",") if c.strip()]):
        if coding == "identity":
            continue
        if coding == "gzip":
            attempts = [16 + zlib.MAX_WBITS]
        elif coding == "deflate":
            attempts = [zlib.MAX_WBITS, -zlib.MAX_WBITS]  # zlib stream; some send raw deflate
        else:
            raise MessageError(f"unsupported content coding {coding!r}")
        for wbits in attempts:
            inflater = zlib.decompressobj(wbits)
            try:
                out = inflater.decompress(body, limit + 1)
            except zlib.error:
                continue
            if len(out) > limit or inflater.unconsumed_tail:
                raise OverflowError(limit)
            if not inflater.eof:
                continue
            body = out
            break
        else:
            raise MessageError(f"body is not valid {coding} data")
    return body


def media_type(content_type: str) -> str:
    """The bare type/subtype of a Content-Type value, lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def _charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        k, _, v = param.partition("=")
        if k.strip().lower() == "charset":
            return v.strip().strip('"') or "utf-8"
    return "utf-8"


def _decode(body: bytes, content_type: str) -> str:
    try:
        return body.decode(_charset(content_type), errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _split_headers(block: bytes) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for line in block.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MessageError(f"malformed CPIM header line {line[:60]!r}")
        out.append((name.strip(), value.strip()))
    return out


def _split_block(data: bytes) -> tuple[bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            return data[:i], data[i + len(sep) :]
    return data, b""


def parse_cpim(body: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str]], bytes]:
    """Split a message/cpim body into message headers, content headers and content."""
    message_block, rest = _split_block(body)
    content_block, content = _split_block(rest)
    return _split_headers(message_block), _split_headers(content_block), content


def _uri_of(value: str) -> str:
    lt, gt = value.find("<"), value.rfind(">")
    return value[lt + 1 : gt].strip() if 0 <= lt < gt else value.strip()


def parse_file_info(body: bytes) -> tuple[FileInfo, ...]:
    """The files an RCS file-transfer document announces (thumbnails are left out)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise MessageError(f"file-transfer document is not XML: {exc}") from None
    out = []
    for info in root.iter(f"{_NS_FT}file-info"):
        if info.get("type", "file") != "file":
            continue
        data = info.find(f"{_NS_FT}data")
        url = data.get("url") if data is not None else None
        if not url:
            continue
        size_text = info.findtext(f"{_NS_FT}file-size")
        out.append(
            FileInfo(
                url=url,
                name=info.findtext(f"{_NS_FT}file-name"),
                size=int(size_text) if size_text and size_text.strip().isdigit() else None,
                content_type=info.findtext(f"{_NS_FT}content-type"),
                until=data.get("until") if data is not None else None,
            )
        )
    if not out:
        raise MessageError("file-transfer document names no file")
    return tuple(out)


def parse_imdn(body: bytes) -> tuple[str, str]:
    """(message-id, state) of an IMDN report (RFC 5438 §7)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise MessageError(f"IMDN report is not XML: {exc}") from None
    message_id = (root.findtext(f"{_NS_IMDN}message-id") or "").strip()
    if not message_id:
        raise MessageError("IMDN report without message-id")
    for status in root.iter(f"{_NS_IMDN}status"):
        for child in status:
            name = child.tag.removeprefix(_NS_IMDN)
            if name in IMDN_STATES:
                return message_id, name
    raise MessageError("IMDN report without a known status")


def display_report(
    message_id: str, sender_uri: str, recipient_uri: str, report_id: str, now: datetime
) -> bytes:
    """A CPIM-wrapped IMDN `displayed` report (RFC 5438 §7.2.1.1) from `sender_uri` (who read
    the message) to `recipient_uri` (who sent it and asked for the report): a message/cpim
    body with a fresh imdn.Message-ID `report_id`."""
    root = ET.Element("imdn", xmlns=_NS_IMDN.strip("{}"))
    ET.SubElement(root, "message-id").text = message_id
    ET.SubElement(root, "datetime").text = now.isoformat(timespec="seconds")
    status = ET.SubElement(ET.SubElement(root, "display-notification"), "status")
    ET.SubElement(status, "displayed")
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\r\n' + ET.tostring(root)
    for uri in (sender_uri, recipient_uri, report_id):
        if any(c in uri for c in "\r\n<>"):
            raise MessageError("a report header value holds a line break or angle bracket")
    head = (
        f"From: <{sender_uri}>\r\nTo: <{recipient_uri}>\r\n"
        f"DateTime: {now.isoformat(timespec='seconds')}\r\n"
        "NS: imdn <urn:ietf:params:imdn>\r\n"
        f"imdn.Message-ID: {report_id}\r\n\r\n"
        f"Content-Type: {IMDN}\r\nContent-Disposition: notification\r\n"
        f"Content-Length: {len(xml)}\r\n\r\n"
    )
    return head.encode() + xml


def describe(content_type: str, body: bytes) -> MessageContent:
    """What a message body means; MessageError when it cannot be read as its type says."""
    kind = media_type(content_type)
    if kind == TEXT:
        return MessageContent("text", text=_decode(body, content_type), inner_type=TEXT)
    if kind == FILE_TRANSFER:
        return MessageContent("file", files=parse_file_info(body), inner_type=FILE_TRANSFER)
    if kind == IMDN:
        message_id, state = parse_imdn(body)
        return MessageContent("imdn", report_for=message_id, report_state=state, inner_type=IMDN)
    if kind == IS_COMPOSING:
        return MessageContent("composing", inner_type=IS_COMPOSING)
    if kind != CPIM:
        return MessageContent("other", inner_type=kind)
    message_headers, content_headers, content = parse_cpim(body)
    headers: dict[str, str] = {}
    prefixes = {"imdn": "imdn"}
    for name, value in message_headers:
        if name.lower() == "ns":
            # NS: prefix <urn>: IMDN headers may use any prefix for urn:ietf:params:imdn.
            prefix, _, urn = value.partition(" ")
            if "urn:ietf:params:imdn" in urn:
                prefixes[prefix.strip().lower()] = "imdn"
            continue
        key = name.lower()
        ns, dot, local = key.partition(".")
        if dot and prefixes.get(ns) == "imdn":
            key = f"imdn.{local}"
        headers.setdefault(key, value)
    inner_ct = next((v for n, v in content_headers if n.lower() == "content-type"), TEXT)
    inner = describe(inner_ct, content) if media_type(inner_ct) != CPIM else None
    if inner is None:
        raise MessageError("CPIM inside CPIM")
    wants = tuple(
        v.strip().lower() for v in headers.get("imdn.disposition-notification", "").split(",")
    )
    return MessageContent(
        inner.kind,
        text=inner.text,
        files=inner.files,
        imdn_id=headers.get("imdn.message-id"),
        wants_reports=tuple(w for w in wants if w),
        report_for=inner.report_for,
        report_state=inner.report_state,
        cpim_from=_uri_of(headers["from"]) if "from" in headers else None,
        inner_type=inner.inner_type,
        headers=headers,
    )


def content_view(content_type: str, body: bytes) -> dict[str, Any]:
    """How a message body is shown in history: kind, text, announced files, IMDN fields."""
    try:
        c = describe(content_type, body)
    except MessageError:
        return {"kind": "other", "text": None, "files": []}
    return {
        "kind": c.kind,
        "text": c.text,
        "files": [
            {"url": f.url, "name": f.name, "size": f.size, "content_type": f.content_type,
             "until": f.until}
            for f in c.files
        ],
        "imdn_id": c.imdn_id,
        "report_for": c.report_for,
        "report_state": c.report_state,
    }  # fmt: skip
