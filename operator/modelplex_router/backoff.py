"""How long a model whose load failed waits before the next automatic load (pure; clock passed in).

After the n-th failed load in a row the model is not loaded again for
``min(maximum, initial * 2 ** (n - 1))`` seconds: with the defaults (2 s, 300 s) 2, 4, 8, ... 256,
then 300 s. Meanwhile requests fail at once with 503, ``Retry-After`` and the failure's cause, instead
of each paying for a load that fails the same way. A successful load resets the count; an explicit
``reload`` does not wait (an operator who fixed the model wants it now).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial: float
    maximum: float

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failed loads in a row (0 when none)."""
        if failures <= 0 or self.initial <= 0:
            return 0.0
        # Capped before the power so a long failure streak cannot overflow.
        exponent = min(failures - 1, 64)
        return min(self.maximum, self.initial * 2.0**exponent)


@dataclass(slots=True)
class LoadBackoff:
    """The failure streak of one model and when it may be loaded again (monotonic seconds)."""

    policy: BackoffPolicy
    failures: int = 0
    retry_at: float = 0.0

    def failed(self, now: float) -> float:
        """Count a failed load; returns the delay now in force."""
        self.failures += 1
        delay = self.policy.delay(self.failures)
        self.retry_at = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0

    def remaining(self, now: float) -> float:
        """Seconds until a load may start again (0: now)."""
        return max(0.0, self.retry_at - now)

    def retry_after(self, now: float) -> int:
        """``remaining`` as a whole-seconds ``Retry-After`` value (at least 1)."""
        return max(1, math.ceil(self.remaining(now)))
