"""A real authoritative DNS server on loopback, serving the records a test puts in it.

The server under test resolves through dnspython against ``OPENSEND_DNS_SERVERS``; pointing that
at :attr:`LoopbackDNSServer.address` gives it real UDP and TCP answers on one port, from the
test's own event loop. Nothing is resolved recursively and nothing leaves the machine.

    zone = ZoneData()
    zone.add("example.net", "MX", "10 mx1.example.net.")
    zone.add("mx1.example.net", "A", "127.0.0.2")
    async with LoopbackDNSServer(zone) as server:
        settings = make_settings(tmp, OPENSEND_DNS_SERVERS=server.address)

Records are kept as text, keyed by (lowercased name without the trailing dot, type), and are
parsed by dnspython on each answer, so a test may change them between lookups. Faults are per
name: :meth:`ZoneData.fail` answers with an error rcode (SERVFAIL by default, a temporary
failure) and :meth:`ZoneData.delay` answers late or never (a timeout).

By default the whole namespace is served authoritatively, so any name nobody added is NXDOMAIN
(reverse lookups of loopback clients included). Give :class:`ZoneData` explicit origins to serve
only those zones and answer REFUSED for everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import dns.asyncresolver
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.tokenizer

logger = logging.getLogger(__name__)

_IN = dns.rdataclass.IN
_TXT_LIKE = frozenset({"TXT", "SPF"})
_MAX_CNAME_CHAIN = 8
_OUR_PAYLOAD = 1232  # what we advertise over EDNS, the DNS Flag Day 2020 value
_TCP_MAX = 65535
_BIND_ATTEMPTS = 50


def normalize_name(name: str | dns.name.Name) -> str:
    """The key form of a name: lowercase, no trailing dot, the root as ``""``.

    Text is parsed as an absolute name, so ``"Example.NET."`` and ``"example.net"`` are the same
    key; non-ASCII text is IDNA-encoded by dnspython the same way a query for it would be.
    """
    parsed = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
    if parsed == dns.name.root:
        return ""
    return parsed.canonicalize().to_text(omit_final_dot=True)


def normalize_rdtype(rdtype: str | int) -> str:
    """The key form of a type: its mnemonic, ``"MX"`` for ``"mx"`` or 15."""
    value = dns.rdatatype.from_text(rdtype) if isinstance(rdtype, str) else rdtype
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(value))


def _is_under(name: str, origin: str) -> bool:
    return origin == "" or name == origin or name.endswith("." + origin)


def _rcode(rcode: str | int) -> dns.rcode.Rcode:
    return dns.rcode.from_text(rcode) if isinstance(rcode, str) else dns.rcode.Rcode.make(rcode)


def _txt_rdata_text(value: str) -> str:
    """A TXT value in canonical text, every character-string at most 255 bytes.

    A value starting with a double quote is read as zone-file text (one or more quoted strings,
    escapes allowed); anything else is one logical string taken literally, so
    ``"v=spf1 -all"`` stays one string. Strings longer than 255 bytes are split into
    consecutive 255-byte strings, which receivers (DKIM, SPF) concatenate back.
    """
    stripped = value.strip()
    if stripped.startswith('"'):
        strings = [
            token.unescape_to_bytes().value
            for token in dns.tokenizer.Tokenizer(stripped).get_remaining()
        ]
    else:
        strings = [value.encode()]
    chunks = [s[i : i + 255] for s in strings for i in range(0, max(len(s), 1), 255)]
    rdata = dns.rdtypes.ANY.TXT.TXT(_IN, dns.rdatatype.TXT, chunks)
    return rdata.to_text()


@dataclass
class Lookup:
    """What the zone says about one question; :class:`LoopbackDNSServer` turns it into a reply."""

    rcode: dns.rcode.Rcode
    authoritative: bool
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)


class ZoneData:
    """The records a test serves, plus the faults it injects.

    ``origins`` are the zones served authoritatively (default: the root, i.e. every name).
    Adding a record outside them is an error, so a typo in a test fails loudly.
    """

    def __init__(self, *origins: str, default_ttl: int = 0) -> None:
        self.origins: tuple[str, ...] = tuple(normalize_name(o) for o in origins) or ("",)
        self.default_ttl = default_ttl
        self._records: dict[tuple[str, str], list[str]] = {}
        self._ttls: dict[tuple[str, str], int] = {}
        self._faults: dict[tuple[str, str | None], dns.rcode.Rcode] = {}
        self._delays: dict[str, float] = {}

    # -- records ---------------------------------------------------------------------------

    @property
    def records(self) -> dict[tuple[str, str], list[str]]:
        """A copy of every record set: (name, type) -> canonical rdata texts."""
        return {key: list(values) for key, values in self._records.items()}

    def get(self, name: str, rdtype: str) -> list[str]:
        """The canonical rdata texts stored for ``name``/``rdtype`` (empty if none)."""
        return list(self._records.get((normalize_name(name), normalize_rdtype(rdtype)), []))

    def add(self, name: str, rdtype: str, *rdatas: str, ttl: int | None = None) -> None:
        """Add one or more records, e.g. ``add("example.net", "MX", "10 mx1.example.net.")``.

        Names inside rdata are absolute whether or not they end in a dot. TXT values longer than
        255 bytes are split into several character-strings (see :func:`_txt_rdata_text`).
        ``ttl`` (default ``default_ttl``) applies to the whole record set.
        """
        if not rdatas:
            raise ValueError("add() needs at least one rdata")
        key_name = normalize_name(name)
        key_type = normalize_rdtype(rdtype)
        if self.origin_for(key_name) is None:
            raise ValueError(f"{name!r} is outside the served zones {self.origins!r}")
        texts = [self._canonical(key_type, value) for value in rdatas]
        types_here = {t for (n, t) in self._records if n == key_name}
        if key_type == "CNAME":
            if types_here - {"CNAME"}:
                raise ValueError(f"{name!r} has other data; a CNAME must stand alone")
            if len(set(texts) | set(self._records.get((key_name, key_type), []))) > 1:
                raise ValueError(f"{name!r} can have only one CNAME")
        elif "CNAME" in types_here:
            raise ValueError(f"{name!r} is a CNAME; it cannot have {key_type} records too")
        stored = self._records.setdefault((key_name, key_type), [])
        stored.extend(text for text in dict.fromkeys(texts) if text not in stored)
        self._ttls[(key_name, key_type)] = self.default_ttl if ttl is None else ttl

    def remove(self, name: str, rdtype: str, rdata: str | None = None) -> None:
        """Remove the record set, or only the one record ``rdata``; absent records are fine."""
        key = (normalize_name(name), normalize_rdtype(rdtype))
        if rdata is None:
            self._records.pop(key, None)
        elif key in self._records:
            text = self._canonical(key[1], rdata)
            self._records[key] = [v for v in self._records[key] if v != text]
            if not self._records[key]:
                del self._records[key]
        if key not in self._records:
            self._ttls.pop(key, None)

    def clear(self) -> None:
        """Forget every record, fault and delay (the served origins stay)."""
        self._records.clear()
        self._ttls.clear()
        self._faults.clear()
        self._delays.clear()

    # -- faults ----------------------------------------------------------------------------

    def fail(
        self,
        name: str,
        rdtype: str | None = None,
        rcode: dns.rcode.Rcode | str | int = dns.rcode.SERVFAIL,
    ) -> None:
        """Answer ``rcode`` (default SERVFAIL) for ``name``, for ``rdtype`` or every type.

        Applies to the queried name and to every name a CNAME chain passes through; works for
        names outside the served zones too.
        """
        code = rcode if isinstance(rcode, dns.rcode.Rcode) else _rcode(rcode)
        key_type = None if rdtype is None else normalize_rdtype(rdtype)
        self._faults[(normalize_name(name), key_type)] = code

    def delay(self, name: str, seconds: float = math.inf) -> None:
        """Answer queries for ``name`` only after ``seconds``; by default, never answer."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        self._delays[normalize_name(name)] = seconds

    def heal(self, name: str) -> None:
        """Remove the faults and the delay set on ``name``."""
        key_name = normalize_name(name)
        self._delays.pop(key_name, None)
        for key in [k for k in self._faults if k[0] == key_name]:
            del self._faults[key]

    def delay_for(self, name: str | dns.name.Name) -> float:
        """Seconds to hold an answer for ``name``: 0 for none, ``math.inf`` for never."""
        return self._delays.get(normalize_name(name), 0.0)

    # -- answering -------------------------------------------------------------------------

    def origin_for(self, name: str) -> str | None:
        """The closest served origin enclosing ``name`` (a key), or ``None`` if outside all."""
        enclosing = [origin for origin in self.origins if _is_under(name, origin)]
        return max(enclosing, key=len) if enclosing else None

    def exists(self, name: str) -> bool:
        """Whether the key ``name`` owns records, is an empty non-terminal or is an origin."""
        if name in self.origins:
            return True
        return any(n == name or _is_under(n, name) for (n, _) in self._records)

    def lookup(self, qname: str | dns.name.Name, rdtype: str | int) -> Lookup:
        """Answer one question as an authoritative server would, following CNAMEs in-zone."""
        owner = qname if isinstance(qname, dns.name.Name) else dns.name.from_text(qname)
        key_type = normalize_rdtype(rdtype)
        answer: list[dns.rrset.RRset] = []
        seen: set[str] = set()
        for _ in range(_MAX_CNAME_CHAIN):
            key_name = normalize_name(owner)
            fault = self._faults.get((key_name, key_type), self._faults.get((key_name, None)))
            if fault is not None:
                return Lookup(fault, authoritative=False)
            origin = self.origin_for(key_name)
            if origin is None:
                if answer:  # a CNAME out of our zones: the client follows it elsewhere
                    return Lookup(dns.rcode.NOERROR, True, answer)
                return Lookup(dns.rcode.REFUSED, authoritative=False)
            seen.add(key_name)
            found = self._rrsets(owner, key_name, key_type)
            if found:
                return Lookup(dns.rcode.NOERROR, True, answer + found)
            cname = self._rrsets(owner, key_name, "CNAME") if key_type != "CNAME" else []
            if not cname:
                rcode = dns.rcode.NOERROR if self.exists(key_name) else dns.rcode.NXDOMAIN
                return Lookup(rcode, True, answer, [self._soa(origin)])
            answer.extend(cname)
            target = cname[0][0].target
            if normalize_name(target) in seen:  # a loop: give what we have, clients detect it
                return Lookup(dns.rcode.NOERROR, True, answer)
            owner = target
        return Lookup(dns.rcode.NOERROR, True, answer)

    def _rrsets(self, owner: dns.name.Name, key_name: str, key_type: str) -> list[dns.rrset.RRset]:
        if key_type == "ANY":
            types = [t for (n, t) in self._records if n == key_name]
            return [rrset for t in types for rrset in self._rrsets(owner, key_name, t)]
        texts = self._records.get((key_name, key_type))
        if texts:
            ttl = self._ttls.get((key_name, key_type), self.default_ttl)
            return [
                dns.rrset.from_text_list(
                    owner, ttl, _IN, key_type, texts, origin=dns.name.root, relativize=False
                )
            ]
        if key_type == "SOA" and key_name in self.origins:
            soa = self._soa(key_name)
            return [dns.rrset.from_rdata_list(owner, soa.ttl, list(soa))]
        return []

    def _soa(self, origin: str) -> dns.rrset.RRset:
        """The origin's SOA for negative answers: the test's own, or a synthetic one."""
        texts = self._records.get((origin, "SOA"))
        ttl = self._ttls.get((origin, "SOA"), 0)
        if not texts:
            texts, ttl = ["ns.opensend.test. hostmaster.opensend.test. 1 3600 600 86400 0"], 0
        owner = dns.name.from_text(origin) if origin else dns.name.root
        return dns.rrset.from_text_list(
            owner, ttl, _IN, "SOA", texts, origin=dns.name.root, relativize=False
        )

    @staticmethod
    def _canonical(key_type: str, value: str) -> str:
        text = _txt_rdata_text(value) if key_type in _TXT_LIKE else value
        rdata = dns.rdata.from_text(_IN, key_type, text, origin=dns.name.root, relativize=False)
        return rdata.to_text()


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: LoopbackDNSServer) -> None:
        self._server = server
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._server._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # Typically ICMP port unreachable for a late answer to a client that gave up.
        logger.debug("dns udp error: %s", exc)


class LoopbackDNSServer:
    """An asyncio UDP + TCP DNS server on one loopback port, answering from a :class:`ZoneData`.

    ``queries`` lists every question received, as ``(name, type)`` keys, over either transport;
    ``tcp_queries`` only those that came over TCP.
    """

    def __init__(self, zone: ZoneData | None = None) -> None:
        self.zone = zone if zone is not None else ZoneData()
        self.queries: list[tuple[str, str]] = []
        self.tcp_queries: list[tuple[str, str]] = []
        self.host = ""
        self._port: int | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UDPProtocol | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the DNS server is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6), the form ``OPENSEND_DNS_SERVERS`` takes."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def started(self) -> bool:
        return self._port is not None

    def queried(self, name: str, rdtype: str) -> int:
        """How many times ``name``/``rdtype`` was asked, over either transport."""
        return self.queries.count((normalize_name(name), normalize_rdtype(rdtype)))

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        """Bind UDP and TCP on the same port; with ``port=0``, retry until a free one fits both."""
        if self.started:
            raise RuntimeError("the DNS server is already started")
        loop = asyncio.get_running_loop()
        attempts = _BIND_ATTEMPTS if port == 0 else 1
        for attempt in range(1, attempts + 1):
            udp, protocol = await loop.create_datagram_endpoint(
                lambda: _UDPProtocol(self), local_addr=(host, port)
            )
            bound = int(udp.get_extra_info("sockname")[1])
            try:
                tcp = await asyncio.start_server(self._serve_tcp, host, bound)
            except OSError:
                udp.close()
                await protocol.closed
                if attempt == attempts:
                    raise
                logger.debug("dns tcp port %d taken, trying another", bound)
                continue
            self._udp, self._udp_protocol, self._tcp = udp, protocol, tcp
            self._port, self.host = bound, host
            logger.debug("dns server listening on %s (udp+tcp)", self.address)
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    async def stop(self) -> None:
        """Close both listeners and open TCP connections; drop answers still being delayed."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._udp_protocol is not None:
            await self._udp_protocol.closed  # the socket is released only on connection_lost
            self._udp_protocol = None
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._tcp_writers):
            writer.close()
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
            self._tcp = None
        self._port = None

    async def __aenter__(self) -> Self:
        if not self.started:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- protocol --------------------------------------------------------------------------

    def _respond(
        self, wire: bytes, peer: object, transport: str
    ) -> tuple[dns.message.Message | None, float]:
        """The reply to one query message and how long to hold it (``math.inf``: never)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception as exc:  # malformed input is the client's problem: drop it
            logger.debug("dns %s from %s: unparseable query dropped: %s", transport, peer, exc)
            return None, 0.0
        if query.flags & dns.flags.QR:
            return None, 0.0
        response = dns.message.make_response(query, our_payload=_OUR_PAYLOAD)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response, 0.0
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response, 0.0
        question = query.question[0]
        key = (normalize_name(question.name), normalize_rdtype(question.rdtype))
        self.queries.append(key)
        if transport == "tcp":
            self.tcp_queries.append(key)
        delay = self.zone.delay_for(question.name)
        if question.rdclass != _IN:
            response.set_rcode(dns.rcode.REFUSED)
        else:
            result = self.zone.lookup(question.name, question.rdtype)
            response.set_rcode(result.rcode)
            if result.authoritative:
                response.flags |= dns.flags.AA
            response.answer = result.answer
            response.authority = result.authority
        logger.debug(
            "dns %s %s %s from %s -> %s%s",
            transport,
            key[0] or ".",
            key[1],
            peer,
            dns.rcode.to_text(response.rcode()),
            "" if not delay else f" (held {delay}s)",
        )
        return response, delay

    def _on_datagram(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        response, delay = self._respond(data, addr, "udp")
        if response is None or math.isinf(delay):
            return
        limit = max(512, response.request_payload) if response.edns >= 0 else 512
        wire = response.to_wire(max_size=limit, prefer_truncation=True)
        if not delay:
            self._send_udp(wire, addr)
            return
        task = asyncio.get_running_loop().create_task(self._send_udp_later(wire, addr, delay))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _send_udp(self, wire: bytes, addr: tuple[str | int, ...]) -> None:
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(wire, addr)

    async def _send_udp_later(self, wire: bytes, addr: tuple[str | int, ...], delay: float) -> None:
        await asyncio.sleep(delay)
        self._send_udp(wire, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Length-prefixed queries, answered in order, until the client closes."""
        self._tcp_writers.add(writer)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                try:
                    length = int.from_bytes(await reader.readexactly(2), "big")
                    data = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                response, delay = self._respond(data, peer, "tcp")
                if response is None or math.isinf(delay):
                    continue
                if delay:
                    await asyncio.sleep(delay)
                wire = response.to_wire(
                    max_size=_TCP_MAX, prefer_truncation=True, prepend_length=True
                )
                writer.write(wire)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._tcp_writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def dns_server(
    zone: ZoneData | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[LoopbackDNSServer]:
    """A started server for the duration of the generator; wrap it as a pytest fixture."""
    server = LoopbackDNSServer(zone)
    await server.start(host)
    try:
        yield server
    finally:
        await server.stop()


def make_resolver(
    server: LoopbackDNSServer, *, lifetime: float = 5.0, timeout: float | None = None
) -> dns.asyncresolver.Resolver:
    """A dnspython async resolver that asks ``server`` only, with no cache."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port
    resolver.lifetime = lifetime
    resolver.timeout = lifetime if timeout is None else timeout
    return resolver


__all__ = [
    "Lookup",
    "LoopbackDNSServer",
    "ZoneData",
    "dns_server",
    "make_resolver",
    "normalize_name",
    "normalize_rdtype",
]
