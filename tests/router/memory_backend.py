"""A FAKE backend for unit tests of the coordinator, the pool and the scaler: replicas are entries in a
table (no process, no HTTP), ready as soon as they are asked for unless a test says otherwise. It keeps
the backend contract (modelplex_router.backend) through the same ReplicaBoard the real backends use,
and records every call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from modelplex_router.backend import BackendObservation, Replica, Replicas
from modelplex_router.replica_board import ReplicaBoard
from modelplex_spec import ModelEntry


@dataclass
class MemoryBackend:
    ready_at_once: bool = True
    board: ReplicaBoard = field(default_factory=ReplicaBoard)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    members: dict[str, list[Replica]] = field(default_factory=dict)
    started: int = 0

    def _set(self, api_id: str, desired: int, members: list[Replica]) -> None:
        self.members[api_id] = members
        self.board.publish(api_id, desired=desired, members=members)

    def _new(self, api_id: str) -> Replica:
        self.started += 1
        return Replica(f"{api_id}/{self.started}", f"http://replica-{self.started}", self.ready_at_once)

    async def ensure_started(self, api_id: str, entry: ModelEntry) -> None:
        self.calls.append(("ensure_started", api_id))
        floor = entry.effective_scaling.floor
        members = self.members.get(api_id, [])
        if len(members) < floor:
            self._set(api_id, floor, members + [self._new(api_id) for _ in range(floor - len(members))])

    async def wait_ready(self, api_id: str, timeout_seconds: float) -> Replicas:
        replicas = self.board.get(api_id)
        while not replicas.ready:
            replicas = await self.board.changed(api_id, replicas.version, timeout_seconds)
        return replicas

    async def scale(self, api_id: str, replicas: int, *, reason: str, remove: Sequence[str] = ()) -> None:
        self.calls.append(("scale", api_id, str(replicas), ",".join(remove)))
        members = self.members.get(api_id, [])
        if replicas < len(members):
            order = sorted(members, key=lambda r: r.id not in remove)
            gone = {r.id for r in order[: len(members) - replicas]}
            members = [r for r in members if r.id not in gone]
        members = members + [self._new(api_id) for _ in range(replicas - len(members))]
        self._set(api_id, replicas, members)

    def make_ready(self, api_id: str) -> None:
        self._set(api_id, self.board.get(api_id).desired, [Replica(r.id, r.url, True) for r in self.members[api_id]])

    def take_away(self, api_id: str, replica_id: str) -> None:
        """A replica goes away on its own (a pod deleted, a process dead)."""
        members = [r for r in self.members[api_id] if r.id != replica_id]
        self._set(api_id, self.board.get(api_id).desired, members)

    def replicas(self, api_id: str) -> Replicas:
        return self.board.get(api_id)

    async def replicas_changed(self, api_id: str, version: int, timeout_seconds: float) -> Replicas:
        return await self.board.changed(api_id, version, timeout_seconds)

    async def stop(self, api_id: str, grace_seconds: float) -> None:
        self.calls.append(("stop", api_id))
        self._set(api_id, 0, [])

    async def end_unresponsive(self, api_id: str, replica_id: str) -> None:
        self.calls.append(("end_unresponsive", api_id, replica_id))

    async def observe(self, api_id: str) -> BackendObservation:
        members = self.members.get(api_id, [])
        return BackendObservation(running=bool(members), ready=any(r.ready for r in members))

    async def close(self) -> None:
        return None
