"""Remote image URLs: off by default; when on, no private, loopback or link-local target (SSRF), even
through a redirect or a name that resolves to loopback. No traffic leaves this machine."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from modelplex_runtime import images
from modelplex_runtime.errors import APIError
from modelplex_runtime.remote_fetch import FetchRefused, fetch, public_address

PNG = b"\x89PNG fake bytes"


class _Handler(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Handler.hits.append(self.path)
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.hits.clear()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://localhost/x.png",
        "http://10.1.2.3/x.png",
        "http://192.168.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://0.0.0.0/x.png",
        "http://100.64.0.1/x.png",
        "https://[fe80::1]/x.png",
    ],
)
def test_private_and_loopback_targets_are_refused(url: str) -> None:
    with pytest.raises(APIError) as info:
        images.fetch_image_bytes(url, allow_remote=True, timeout=2)
    assert info.value.status == 400
    assert "non-public address" in str(info.value.message)


def test_remote_images_are_off_unless_enabled() -> None:
    with pytest.raises(APIError) as info:
        images.fetch_image_bytes("http://93.184.216.34/x.png", allow_remote=False)
    assert "--allow-remote-images" in str(info.value.message)
    with pytest.raises(APIError):
        images.fetch_image_bytes("file:///etc/passwd", allow_remote=True)


def test_public_address_policy() -> None:
    assert public_address(ipaddress.ip_address("93.184.216.34"), 80)
    assert public_address(ipaddress.ip_address("2606:2800:220:1::1"), 443)
    for bad in (
        "127.0.0.2",
        "10.0.0.1",
        "172.16.5.4",
        "169.254.169.254",
        "224.0.0.1",
        "::1",
        "fd00::1",
        "::",
    ):
        assert not public_address(ipaddress.ip_address(bad), 80), bad


def test_redirects_are_checked_at_every_hop(server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    # A policy standing in for "public": only this server's port on loopback counts as allowed.
    only_this = lambda ip, p: ip.is_loopback and p == port  # noqa: E731
    assert fetch(f"http://127.0.0.1:{port}/img.png", 1024, 5, only_this) == PNG
    hop = f"http://127.0.0.1:{port}/redirect?to=http://127.0.0.1:{port}/img.png"
    assert fetch(hop, 1024, 5, only_this) == PNG
    # The redirect leads to another (internal) port: refused before connecting to it.
    with pytest.raises(FetchRefused, match="non-public"):
        fetch(f"http://127.0.0.1:{port}/redirect?to=http://localhost:{port + 1}/admin", 1024, 5, only_this)
    with pytest.raises(FetchRefused, match="exceeds"):
        fetch(f"http://127.0.0.1:{port}/img.png", 4, 5, only_this)
    loop = f"http://127.0.0.1:{port}/redirect?to=/redirect?to=/redirect?to=/redirect?to=/redirect?to=/redirect?to=/x"
    with pytest.raises(FetchRefused, match="redirects"):
        fetch(loop, 1024, 5, only_this)
