"""The SSRF guard for upstream URLs given through the API (security.md S1).

A deployment added with ``/model/new`` names where the gateway sends traffic, with the gateway's network
position. Config-file deployments are trusted; these are not. An API-given URL must be::

    http(s) only, no spaces / control characters (CR, LF) / backslashes, no user info, no fragment
    https                                       unless its origin is allowed (below)
    a host whose every address is public        no loopback, private, shared (100.64/10), link-local
                                                (169.254.169.254, the cloud metadata service), multicast,
                                                unspecified (0.0.0.0), reserved or documentation ranges,
                                                nor those inside IPv6 (::ffff:127.0.0.1, 6to4, NAT64)

Hosts are read as the resolver reads them: ``2130706433``, ``0x7f.1`` and ``017700000001`` are all
127.0.0.1 (``inet_aton`` forms), and a name is resolved (``getaddrinfo``) and every address checked.

The operator may allow more in the config's ``lockgate.model_api_base_allow``: an origin
(``http://127.0.0.1:8000``, ``http://vllm.internal:*``; any port with ``*``, the scheme's default without
one) is allowed whatever it is and resolves to, http included; a network (``10.0.0.0/8``) allows https URLs
whose addresses all fall inside it.

:func:`check_syntax` does no I/O (used again whenever stored models are loaded); :func:`check` also
resolves the host. The resolved address is not pinned: a name that later resolves elsewhere is caught only
at the next ``/model/new`` or ``/model/update``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Allowlist", "Target", "UnsafeURL", "check", "check_syntax", "is_internal", "literal_address"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_NUMERIC_LABEL = re.compile(r"(?:[0-9]+|0[xX][0-9a-fA-F]*)")
RESOLVE_TIMEOUT = 5.0


class UnsafeURL(ValueError):
    """A URL the gateway will not send traffic to; the message says why (for the admin who gave it)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL leads: scheme, host (lower case; an address in its canonical form), port."""

    scheme: str
    host: str
    port: int
    address: Address | None
    """The host when it is an address literal (in any encoding the resolver accepts)."""
    trusted: bool
    """Its origin is in the allowlist: no further checks."""


@dataclass(frozen=True, slots=True)
class Allowlist:
    origins: tuple[tuple[str, str, int | None], ...] = ()
    """(scheme, host, port or None for any port)."""
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        """The allowlist of ``lockgate.model_api_base_allow``; ``ValueError`` naming a malformed entry."""
        origins: list[tuple[str, str, int | None]] = []
        networks: list[Network] = []
        for entry in entries:
            if not isinstance(entry, str) or not entry or _BAD_CHARS.search(entry):
                raise ValueError(f"{entry!r} is not an origin (http://host:port) or a network (10.0.0.0/8)")
            if "://" not in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"{entry!r} is neither an origin (http://host:port) nor a network") from None
                continue
            scheme, _, rest = entry.partition("://")
            scheme = scheme.lower()
            rest = rest.removesuffix("/")
            if scheme not in _DEFAULT_PORTS or not rest or any(c in rest for c in "/?#@"):
                raise ValueError(f"{entry!r} must be an origin: http(s)://host or http(s)://host:port (port * = any)")
            host, port_text = _split_host_port(rest)
            port: int | None
            if port_text == "*":
                port = None
            elif port_text is None:
                port = _DEFAULT_PORTS[scheme]
            elif port_text.isdigit() and 0 < int(port_text) < 65536:
                port = int(port_text)
            else:
                raise ValueError(f"{entry!r} has an invalid port")
            if not host:
                raise ValueError(f"{entry!r} has no host")
            origins.append((scheme, _canonical_host(host), port))
        return cls(tuple(origins), tuple(networks))

    def allows_origin(self, scheme: str, host: str, port: int) -> bool:
        return any(s == scheme and h == host and p in (None, port) for s, h, p in self.origins)

    def allows_address(self, address: Address) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)


def _split_host_port(netloc: str) -> tuple[str, str | None]:
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    host, sep, port = netloc.rpartition(":")
    return (host, port) if sep else (netloc, None)


def _canonical_host(host: str) -> str:
    host = host.lower().rstrip(".")
    address = literal_address(host)
    return str(address) if address is not None else host


def literal_address(host: str) -> Address | None:
    """The address a host names literally, read as the resolver reads it (``0x7f.1`` is 127.0.0.1)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0] if ":" in host else host)
    except ValueError:
        pass
    if ":" in host or not host.isascii():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def is_internal(address: Address) -> bool:
    """Whether an address is anything but a public unicast one (IPv4 inside IPv6 included)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and any(address in n for n in _NAT64):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and is_internal(embedded):
            return True
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
    )


def check_syntax(url: object, allow: Allowlist, *, what: str = "api_base") -> Target:
    """Refuse a URL that is malformed, not https (unless allowed), or whose host is an internal address or
    ``localhost``; no I/O. Returns where it leads."""
    if not isinstance(url, str) or not url:
        raise UnsafeURL(f"{what} must be a URL")
    if len(url) > 2048:
        raise UnsafeURL(f"{what} is too long")
    if _BAD_CHARS.search(url):
        raise UnsafeURL(f"{what} must not contain spaces, control characters (CR, LF) or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed [ in the host
        raise UnsafeURL(f"{what} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeURL(f"{what} must be an https:// URL")
    if "@" in parts.netloc:
        raise UnsafeURL(f"{what} must not contain user info (user:password@); give credentials as api_key")
    if parts.fragment or url.endswith("#"):
        raise UnsafeURL(f"{what} must not contain a fragment (#)")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise UnsafeURL(f"{what} has no host")
    if not raw_host.isascii():
        raise UnsafeURL(f"{what}: write the host in its ASCII (punycode) form")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise UnsafeURL(f"{what} has an invalid port") from None
    host = raw_host.rstrip(".")
    address = literal_address(host)
    if address is None and _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        raise UnsafeURL(f"{what}: '{host[:100]}' is not a valid address")
    canonical = str(address) if address is not None else host
    if allow.allows_origin(scheme, canonical, port):
        return Target(scheme, canonical, port, address, trusted=True)
    hint = "or allow it in the config's lockgate.model_api_base_allow"
    if scheme != "https":
        raise UnsafeURL(f"{what} must be an https:// URL ({hint})")
    if address is not None and is_internal(address) and not allow.allows_address(address):
        raise UnsafeURL(f"{what} points at an internal address ({address}); give a public host ({hint})")
    if address is None and (host == "localhost" or host.endswith(".localhost")):
        raise UnsafeURL(f"{what} points at this machine (localhost); give a public host ({hint})")
    return Target(scheme, canonical, port, address, trusted=False)


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check(url: object, allow: Allowlist, *, what: str = "api_base", resolve: Resolver | None = None) -> Target:
    """:func:`check_syntax`, then resolve a host name and refuse it if any of its addresses is internal."""
    target = check_syntax(url, allow, what=what)
    if target.trusted or target.address is not None:
        return target
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            found = await (resolve or _getaddrinfo)(target.host, target.port)
    except (OSError, TimeoutError, UnicodeError):
        raise UnsafeURL(f"{what}: the host '{target.host[:100]}' cannot be resolved") from None
    if not found:
        raise UnsafeURL(f"{what}: the host '{target.host[:100]}' cannot be resolved")
    for text in found:
        address = literal_address(text)
        if address is None or (is_internal(address) and not allow.allows_address(address)):
            raise UnsafeURL(
                f"{what}: '{target.host[:100]}' resolves to an internal address ({text}); give a public host "
                "(or allow it in the config's lockgate.model_api_base_allow)"
            )
    return target
