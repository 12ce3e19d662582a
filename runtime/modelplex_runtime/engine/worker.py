"""One daemon thread that owns a model and works through a queue of jobs.

Model compute runs here, never on the event loop. ``take`` decides how many queued jobs form one unit
of work (the embedder batches several requests into one forward; the vision engine takes one).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from modelplex_runtime.engine.heartbeat import Heartbeat

J = TypeVar("J")


def take_one(jobs: deque[J]) -> list[J]:
    return [jobs.popleft()]


class JobWorker(Generic[J]):
    def __init__(
        self,
        name: str,
        run: Callable[[list[J]], None],
        take: Callable[[deque[J]], list[J]] = take_one,
        stall_seconds: float = 120.0,
    ) -> None:
        self._run = run
        self.heartbeat = Heartbeat()
        self.stall_seconds = stall_seconds
        self._take = take
        self._jobs: deque[J] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: J) -> None:
        with self._cv:
            self._jobs.append(job)
            self._cv.notify()

    def queue_depth(self) -> int:
        return len(self._jobs)

    def health(self) -> str | None:
        return self.heartbeat.problem(self._thread, self.stall_seconds)

    def shutdown(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._jobs:
                    self.heartbeat.idle()
                    self._cv.wait()
                if self._stopping:
                    return
                self.heartbeat.busy()
                batch = self._take(self._jobs)
            if batch:
                self._run(batch)
            self.heartbeat.beat()
