"""A small authoritative DNS server for the tests, on a UDP port of 127.0.0.1, built on
dnspython's message parsing: it answers A, AAAA, SRV and NAPTR questions from a dict and counts the
questions it got.

    with DnsServer({("_sip._udp.carrier.test", "SRV"): ["10 50 5062 a.carrier.test"],
                    ("a.carrier.test", "A"): ["127.0.0.1"]}) as dns:
        dns.address  -> "127.0.0.1:PORT" (for [sip] dns_servers)

A name it has records for (of another type) gets an empty answer; a name it knows nothing of
gets NXDOMAIN.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping, Sequence

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self, records: Mapping[tuple[str, str], Sequence[str]], ttl: int = 60) -> None:
        self.records = {(n.lower().rstrip("."), t): list(v) for (n, t), v in records.items()}
        self.ttl = ttl
        self.questions: list[tuple[str, str]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop = False

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._sock.close()
        self._thread.join(2)

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, addr = self._sock.recvfrom(4096)
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.AA
            for q in query.question:
                name = q.name.to_text(omit_final_dot=True).lower()
                rtype = dns.rdatatype.to_text(q.rdtype)
                self.questions.append((name, rtype))
                values = self.records.get((name, rtype))
                if values:
                    reply.answer.append(
                        dns.rrset.from_text_list(
                            q.name,
                            self.ttl,
                            dns.rdataclass.IN,
                            rtype,
                            values,
                            origin=dns.name.root,
                            relativize=False,
                        )  # fmt: skip
                    )
                elif not any(n == name for n, _ in self.records):
                    reply.set_rcode(dns.rcode.NXDOMAIN)
            try:
                self._sock.sendto(reply.to_wire(), addr)
            except OSError:
                return
