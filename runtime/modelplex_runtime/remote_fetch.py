"""Fetch a remote image without SSRF: only public addresses, checked on every connection (redirects too).

The address check happens where the socket is opened, on the addresses the name resolved to, and the
connection goes to the checked address: a DNS answer cannot change between the check and the connect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urljoin, urlsplit

import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress, int], bool]

MAX_REDIRECTS = 5


class FetchRefused(Exception):
    """The URL may not be fetched, or fetching it failed; the message is safe to show to the client."""


def public_address(ip: IPAddress, _port: int) -> bool:
    """Only globally routable unicast: no loopback, private, link-local (cloud metadata), CGNAT, multicast,
    reserved or unspecified address, also when written as an IPv4-mapped IPv6 address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _GuardedBackend(httpcore.SyncBackend):
    def __init__(self, allowed: AddressPolicy) -> None:
        self.allowed = allowed

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[tuple] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FetchRefused(f"cannot resolve {host!r}: {exc.strerror}") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        refused = [str(a) for a in addresses if not self.allowed(a, port)]
        if refused or not addresses:
            raise FetchRefused(
                f"{host!r} resolves to a non-public address ({', '.join(refused)}); remote images may only "
                "come from public addresses"
            )
        return super().connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)


def fetch(url: str, max_bytes: int, timeout: float, allowed: AddressPolicy = public_address) -> bytes:
    """GET ``url`` (http/https), following up to MAX_REDIRECTS redirects, each one checked again."""
    with httpcore.ConnectionPool(network_backend=_GuardedBackend(allowed), retries=0) as pool:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FetchRefused(f"only http(s) image URLs can be fetched, not {url[:100]!r}")
            try:
                with pool.stream(
                    "GET", url, extensions={"timeout": dict.fromkeys(("connect", "read", "pool"), timeout)}
                ) as resp:
                    if resp.status in (301, 302, 303, 307, 308):
                        location = dict((k.lower(), v) for k, v in resp.headers).get(b"location")
                        if not location:
                            raise FetchRefused(f"redirect without a Location from {url[:100]!r}")
                        url = urljoin(url, location.decode("latin-1"))
                        continue
                    if resp.status >= 400:
                        raise FetchRefused(f"fetching {url[:100]!r} answered HTTP {resp.status}")
                    data = bytearray()
                    for chunk in resp.iter_stream():
                        data += chunk
                        if len(data) > max_bytes:
                            raise FetchRefused(f"image {url[:100]!r} exceeds {max_bytes} bytes")
                    return bytes(data)
            except httpcore.TimeoutException:
                raise FetchRefused(f"fetching {url[:100]!r} timed out") from None
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
                raise FetchRefused(f"could not fetch {url[:100]!r}: {type(exc).__name__}") from None
    raise FetchRefused(f"more than {MAX_REDIRECTS} redirects from {url[:100]!r}")
