"""A runtime's process tree, read from /proc (Linux): its processes, their memory, whether any still lives.

A runtime may start processes of its own (vLLM runs an engine core and workers beside its API server).
Unloading a model must end all of them and return their memory, and the memory a model holds is the
whole tree's. Off Linux (no /proc) the tree is the runtime's process alone and nothing is known about it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(child) for child in f.read().split())
        except (OSError, ValueError):
            continue
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc; [] off Linux."""
    found: list[int] = []
    todo = _children(pid)
    while todo:
        child = todo.pop()
        if child in found:
            continue
        found.append(child)
        todo.extend(_children(child))
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    return [pid, *descendants(pid)]


def rss_bytes(pid: int) -> int | None:
    """Resident memory of one process (None once it is gone or off Linux)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def tree_rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` and its descendants together (pages they share count once per process)."""
    own = rss_bytes(pid)
    if own is None:
        return None
    return own + sum(rss_bytes(child) or 0 for child in descendants(pid))


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, ... (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so fields follow the last ')'.
    return stat[stat.rfind(b")") + 2 :].split()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no memory)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in (b"Z", b"X")


def group(pgid: int) -> list[int]:
    """Every live process of process group ``pgid``, children the group leader no longer holds (it died
    first) included; scans /proc, so for stopping a runtime, not for every request."""
    try:
        entries = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    members = []
    for pid in entries:
        fields = _stat_fields(pid)
        if fields and len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            members.append(pid)
    return members


def shared_memory_files(pids: Iterable[int]) -> set[str]:
    """The /dev/shm files the processes map (vLLM's processes exchange messages through them)."""
    found: set[str] = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps", "rb") as f:
                maps = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        for line in maps.splitlines():
            # "address perms offset dev inode [path]"
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/dev/shm/") and not fields[5].endswith(" (deleted)"):
                found.add(fields[5])
    return found


def any_alive(pids: Iterable[int]) -> bool:
    return any(alive(pid) for pid in pids)
