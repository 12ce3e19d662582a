"""Slow and idle clients over raw sockets (slowloris): each bound closes them, a cap on open connections
refuses the excess, and a request legitimately held for a model load is not hurt by any of it."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from urllib.parse import urlsplit

import pytest

from router.harness import RouterProcess

pytestmark = pytest.mark.integration

MODELS = {"a": {"alias": "alpha", "Plain": {"model_id": "org/alpha"}}}
CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
# Generous against the bounds under test (1 s): a socket that is not closed within this fails the test.
PATIENCE = 20.0


def _connect(router: RouterProcess) -> socket.socket:
    url = urlsplit(router.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=PATIENCE)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the router sends until it closes the connection (fails if it never does)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _trickle(sock: socket.socket, data: bytes, every: float = 0.2) -> bytes:
    """Send ``data`` a byte at a time until the router closes the connection; what it answered."""
    answer = b""
    sock.settimeout(every)
    try:
        for i in range(len(data)):
            sock.sendall(data[i : i + 1])
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return answer
            answer += chunk
        sock.settimeout(PATIENCE)
        return answer + _read_until_closed(sock)
    except (BrokenPipeError, ConnectionResetError):
        return answer


@pytest.fixture
def guarded_router(router_factory) -> RouterProcess:
    return router_factory(
        MODELS,
        control={"*": {"load_delay": 6}},
        env={
            "MODELPLEX_ROUTER_HEADER_TIMEOUT_SECONDS": "1",
            "MODELPLEX_ROUTER_BODY_TIMEOUT_SECONDS": "1",
            "MODELPLEX_ROUTER_KEEP_ALIVE_TIMEOUT_SECONDS": "1",
            "MODELPLEX_ROUTER_MAX_CONNECTIONS": "12",
        },
    )


def test_slow_and_idle_clients_are_cut_off_while_a_held_request_is_served(guarded_router: RouterProcess) -> None:
    router = guarded_router
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        # Held for the 6 s load: far longer than every bound below, and it must still be served.
        held = pool.submit(router.post, "/v1/chat/completions", CHAT)
        router.wait_for(lambda: router.metric("modelplex_requests_waiting", model="alpha") == 1, what="held")

        idle = pool.submit(lambda: _read_until_closed(_connect(router)))
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        slowloris = pool.submit(lambda: _trickle(_connect(router), head + b"X-Padding: " + b"a" * 200))
        body = json.dumps(CHAT).encode()

        def slow_body_client() -> bytes:
            sock = _connect(router)
            sock.sendall(head + f"Content-Length: {len(body)}\r\n\r\n".encode())  # headers at once
            return _trickle(sock, body, 0.3)  # the body a byte at a time

        slow_body = pool.submit(slow_body_client)

        # A kept-alive connection left idle after its response.
        def kept_alive() -> bytes:
            sock = _connect(router)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return _read_until_closed(sock)

        keep_alive = pool.submit(kept_alive)

        assert idle.result() == b""  # nothing sent, nothing answered: closed
        assert slowloris.result().startswith(b"HTTP/1.1 408"), slowloris.result()[:200]
        slow = slow_body.result()
        assert slow.startswith(b"HTTP/1.1 408"), slow[:300]
        assert json.loads(slow.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
        assert keep_alive.result().startswith(b"HTTP/1.1 200")  # answered, then closed when idle

        reply = held.result()
    assert reply.status_code == 200, reply.text
    assert router.metric("modelplex_connections_closed_total", reason="header_timeout") >= 2
    assert router.metric("modelplex_requests_total", model="unknown", code="408") == 1


def test_connections_over_the_cap_are_refused_not_the_held_ones(guarded_router: RouterProcess) -> None:
    router = guarded_router
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        held = pool.submit(router.post, "/v1/chat/completions", CHAT)
        router.wait_for(lambda: router.metric("modelplex_requests_waiting", model="alpha") == 1, what="held")
        # 11 more connections reach the cap of 12 (the held request has one); the next ones are refused.
        open_ = [_connect(router) for _ in range(11)]
        time.sleep(0.2)  # let the router accept them before the ones meant to be refused
        refused = []
        for _ in range(3):
            sock = _connect(router)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            refused.append(_read_until_closed(sock))
        for answer in refused:
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
            head, body = answer.split(b"\r\n\r\n", 1)
            assert b"retry-after: 10" in head.lower()
            assert json.loads(body)["error"]["code"] == "too_many_connections"
        for sock in open_:
            sock.close()
        assert held.result().status_code == 200
    assert router.metric("modelplex_connections_closed_total", reason="refused") == 3
    # Below the cap again, new clients are served.
    assert router.get("/health").status_code == 200
