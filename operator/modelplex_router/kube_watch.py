"""A list + watch of one kind of object in a namespace, kept as a cache (name -> raw object).

The loop: list (the cache becomes exactly what the server has), then watch from the list's
``resourceVersion``, applying each ADDED / MODIFIED / DELETED event, for at most ``resync_seconds``
(asked of the server as ``timeout_seconds``, and bounded on this side too, since a server or proxy
that ignores it would hold the stream forever); then list again. That relist is the periodic resync:
an event lost anywhere on the way is corrected by the next one. An error (the connection, a 5xx, a 410
for a version too old, a 403 for missing RBAC) is logged once per distinct problem and retried after a
back-off (``retry_initial`` doubling to ``retry_max``), which a successful list resets. Every list
request has its own timeout.

``resync_now`` ends the current stream early (a caller that has reason to think an event was lost).

``on_change`` is called (synchronously, in the loop) after each list and each event, with the whole
cache; the caller derives what it needs from it (``kube_endpoints.py``: each model's ready pods).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger("modelplex_router.kube")

# (namespace, label_selector, **kwargs) -> raw response (``_preload_content=False``)
ListCall = Callable[..., Awaitable[Any]]


class ListWatch:
    def __init__(
        self,
        what: str,
        list_call: ListCall,
        namespace: str,
        label_selector: str,
        on_change: Callable[[Mapping[str, dict[str, Any]]], None],
        *,
        resync_seconds: float = 300.0,
        request_timeout: float = 10.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        self.what = what
        self._list = list_call
        self._namespace = namespace
        self._selector = label_selector
        self._on_change = on_change
        self._resync = resync_seconds
        self._timeout = request_timeout
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        """Set once the first list has arrived (the cache is the server's view from then on)."""
        self.problem: str | None = None
        """Why the last attempt failed (None while the watch works)."""
        self.lists = 0
        """How many lists were made (the first one and every resync or recovery)."""
        self.listed_at: float | None = None
        """When (``time.monotonic()``) the request of the last list that arrived was sent: the cache holds
        every change the server had made by then (and the events since)."""
        self._task: asyncio.Task[None] | None = None
        self._stream_deadline: asyncio.Timeout | None = None

    def start(self) -> None:
        """Run the loop in a task of its own (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"watch {self.what}")

    async def close(self) -> None:
        """Stop the loop started by ``start``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    @property
    def streaming(self) -> bool:
        """A watch stream is open now (between a list and the next)."""
        return self._stream_deadline is not None

    def resync_now(self) -> None:
        """End the current watch stream, so that the loop lists again at once (a no-op between streams)."""
        if self._stream_deadline is not None:
            self._stream_deadline.reschedule(asyncio.get_running_loop().time())

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._relist()
                failures = 0
                started = asyncio.get_running_loop().time()
                await self._watch(version)
                if asyncio.get_running_loop().time() - started < 1.0:
                    # A server or proxy that ends every watch at once: no tight list loop.
                    await asyncio.sleep(self._retry_initial)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _expired(exc):
                    continue  # 410 Gone: the version is too old to watch from; list again at once
                failures += 1
                problem = _describe(exc)
                if problem != self.problem:
                    log.warning("watching %s failed (%s); retrying", self.what, problem)
                self.problem = problem
                await asyncio.sleep(min(self._retry_max, self._retry_initial * 2 ** min(failures - 1, 16)))

    async def _relist(self) -> str | None:
        sent = time.monotonic()
        resp = await self._list(
            self._namespace, label_selector=self._selector, _preload_content=False,
            _request_timeout=self._timeout,
        )  # fmt: skip
        data = await raw_json(resp)
        self.objects = {
            obj["metadata"]["name"]: obj for obj in data.get("items") or [] if (obj.get("metadata") or {}).get("name")
        }
        self.lists += 1
        self.listed_at = sent
        if self.problem is not None:
            log.info("watching %s works again", self.what)
        self.problem = None
        self.synced.set()
        self._on_change(self.objects)
        return (data.get("metadata") or {}).get("resourceVersion")

    async def _watch(self, version: str | None) -> None:
        from kubernetes_asyncio import watch

        kwargs: dict[str, Any] = {"label_selector": self._selector, "timeout_seconds": int(self._resync)}
        if version:
            kwargs["resource_version"] = version
        # No connect/read bound inside the stream: an idle watch is silent; the whole stream is bounded below.
        kwargs["_request_timeout"] = self._resync + self._timeout
        # ``return_type="object"``: the raw dicts, as everywhere in the router (the typed models drop fields).
        async with watch.Watch(return_type="object") as stream:
            try:
                async with asyncio.timeout(self._resync + self._timeout) as self._stream_deadline:
                    async for event in stream.stream(self._watch_call, self._namespace, **kwargs):
                        self._apply(event.get("type"), event.get("raw_object") or {})
            except TimeoutError:
                return  # the server kept the stream open past its timeout, or resync_now: resync now
            finally:
                self._stream_deadline = None

    async def _watch_call(self, *args: Any, watch: bool = False, **kwargs: Any) -> Any:
        # The client would send ``watch=True``; the API server reads any boolean spelling, but emulators and
        # some proxies only Go's canonical ``true``.
        return await self._list(*args, watch="true" if watch else "false", **kwargs)

    def _apply(self, kind: str | None, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if not name or kind not in ("ADDED", "MODIFIED", "DELETED"):
            return  # BOOKMARK, or nothing to go on
        if kind == "DELETED":
            if self.objects.pop(name, None) is None:
                return
        else:
            self.objects[name] = obj
        self._on_change(self.objects)


async def raw_json(resp: Any) -> Any:
    """The body of a raw (``_preload_content=False``) response; ApiException for a non-2xx status,
    which the client does not raise itself for raw responses."""
    body = await resp.read()
    if not 200 <= resp.status <= 299:
        from kubernetes_asyncio.client.exceptions import ApiException

        exc = ApiException(status=resp.status, reason=resp.reason)
        exc.body = body.decode("utf-8", "replace")
        raise exc
    return json.loads(body) if body else {}


def _expired(exc: BaseException) -> bool:
    from kubernetes_asyncio.client.exceptions import ApiException

    return isinstance(exc, ApiException) and exc.status == 410


def _describe(exc: BaseException) -> str:
    from kubernetes_asyncio.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        hint = " (the router's Role needs get/list/watch on this resource)" if exc.status == 403 else ""
        return f"HTTP {exc.status} {exc.reason or ''}".rstrip() + hint
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
