"""Health of a loaded model's runtime: the router's own check, apart from the backend's process view.

A runtime can be alive and useless: frozen (SIGSTOP, a stuck driver call, swapped out), or with its
HTTP loop blocked. The backend still reports it running, so the router asks the runtime itself:
``GET /health`` with its own timeout, every ``health_check_interval_seconds``. ``HealthTracker`` (pure)
turns the answers into a verdict: ``failures`` failed checks in a row, with no byte received from the
runtime in between (a runtime streaming tokens is alive, however slowly it answers a probe), declare
it hung. ``HealthProbe`` is the HTTP side.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(slots=True)
class HealthTracker:
    """Consecutive failed health checks of one runtime."""

    threshold: int
    failures: int = 0
    last_problem: str | None = None
    checked_at: float = 0.0
    """When the last check finished (monotonic seconds)."""
    requested: bool = False
    """A request saw the runtime stall: check at the next chance instead of waiting out the interval."""

    def record(self, problem: str | None, now: float, active_since_last: bool = False) -> bool:
        """Record one check (``problem`` None = healthy); True when the runtime is now declared hung.

        ``active_since_last``: bytes came from the runtime since the previous check, so it is alive
        even if this probe failed (a busy runtime answering a probe late); the streak starts over.
        """
        self.checked_at = now
        self.requested = False
        if problem is None or active_since_last:
            self.failures = 0
            self.last_problem = None
            return False
        self.failures += 1
        self.last_problem = problem
        return self.failures >= self.threshold

    def due(self, now: float, interval: float) -> bool:
        return interval > 0 and (self.requested or now - self.checked_at >= interval)

    def check_soon(self) -> None:
        self.requested = True


class HealthProbe:
    """``GET {url}/health`` with a timeout; one shared client for every model's checks."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout), trust_env=False)

    async def problem(self, url: str, path: str = "/health") -> str | None:
        """None when the runtime answers 200 on ``path`` (its engine's liveness path); otherwise what
        went wrong, one line."""
        try:
            resp = await self._http.get(f"{url}{path}")
        except httpx.TimeoutException:
            return f"no answer to GET {path} within {self.timeout:g}s"
        except httpx.HTTPError as exc:
            return f"GET {path} failed ({type(exc).__name__})"
        if resp.status_code != 200:
            return f"GET {path} answered {resp.status_code}" + _reason(resp)
        return None

    async def aclose(self) -> None:
        await self._http.aclose()


def _reason(resp: httpx.Response) -> str:
    """The runtime's own account of why it is unhealthy (OpenAI error shape), as ": ..."; else nothing."""
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f": {' '.join(str(message).split())[:300]}" if message else ""
