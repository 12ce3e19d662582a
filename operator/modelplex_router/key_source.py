"""The keys in force: read from a file (a mounted Kubernetes Secret too) and re-read when it changes."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from modelplex_router.auth import KeyRing, KeysFileError, parse_access_file

log = logging.getLogger("modelplex_router.auth")


class KeySource:
    """``current()`` is called per request; it re-stats the file at most every ``check_interval`` seconds.

    kubelet updates a mounted Secret by swapping a symlink, so the stat (which follows links) sees a new
    mtime/inode and the keys change without a restart. A file that becomes unreadable or invalid keeps the
    previous keys (logged once): a bad edit must not open the router nor lock everyone out.
    """

    def __init__(
        self,
        path: str | None,
        admin_key: str | None = None,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.admin_key = admin_key
        self.check_interval = check_interval
        self.clock = clock
        self._stamp: tuple[float, int, int] | None = None
        self._checked = float("-inf")
        self._problem: str | None = None
        self.ring = self._initial()

    def _initial(self) -> KeyRing:
        """At start an unusable file is fatal (KeysFileError), unlike later changes."""
        if not self.path:
            return parse_access_file("", self.admin_key)
        try:
            self._stamp = self._stat()
            with open(self.path, encoding="utf-8") as fh:
                return parse_access_file(fh.read(), self.admin_key)
        except OSError as exc:
            raise KeysFileError(f"cannot read the keys file {self.path}: {exc.strerror}") from None

    def _stat(self) -> tuple[float, int, int]:
        st = os.stat(self.path or "")
        return (st.st_mtime, st.st_ino, st.st_size)

    def current(self) -> KeyRing:
        if not self.path:
            return self.ring
        now = self.clock()
        if now - self._checked < self.check_interval:
            return self.ring
        self._checked = now
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return self.ring
            with open(self.path, encoding="utf-8") as fh:
                ring = parse_access_file(fh.read(), self.admin_key)
        except (OSError, KeysFileError) as exc:
            problem = str(exc) if isinstance(exc, KeysFileError) else f"cannot read {self.path}: {exc}"
            if problem != self._problem:
                log.error("keys file not reloaded, keeping the previous keys: %s", problem)
            self._problem = problem
            return self.ring
        self._stamp, self._problem, self.ring = stamp, None, ring
        log.info(
            "keys reloaded: %d keys", len(ring.principals), extra={"keys": [p.name for p in ring.principals]}
        )
        return ring
