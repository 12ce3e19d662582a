"""A model's replicas as its requests see them: which ones take requests, how busy each is, which one
takes the next request.

The coordinator owns one pool per model. ``sync`` takes the backend's ``Replicas`` (only when their
version changed, so a request pays one integer comparison): every ready replica gets an ``Endpoint``;
one that stopped being ready (going away, restarting, dead) starts draining: it takes no new request,
and leaves the pool once the requests running on it have finished. ``pick`` asks the model's routing
policy (``routing.choose``, pure) for one of the routable endpoints. ``retire`` drains replicas the
router itself is about to scale away, so they finish their requests before the backend stops them.
"""

from __future__ import annotations

from collections.abc import Collection

from modelplex_router.backend import Replicas
from modelplex_router.endpoint import Endpoint
from modelplex_router.metrics import RouterMetrics
from modelplex_router.routing import Candidate, HashRing, choose, stable_hash
from modelplex_spec import Scaling


class ReplicaPool:
    def __init__(self, api_id: str, health_threshold: int, retry_after: int, metrics: RouterMetrics) -> None:
        self.api_id = api_id
        self.endpoints: dict[str, Endpoint] = {}
        self.version = -1
        self._health_threshold = health_threshold
        self._retry_after = retry_after
        self._metrics = metrics
        self._turn = 0
        self._ring: HashRing | None = None
        self._ring_ids: tuple[str, ...] = ()
        self._retired: set[Endpoint] = set()

    # -- what the backend says --------------------------------------------------------------------

    def sync(self, replicas: Replicas) -> None:
        """Follow the backend's replicas: new ready ones join, ones no longer ready drain."""
        if replicas.version == self.version:
            return
        self.version = replicas.version
        ready = {r.id: r for r in replicas.members if r.ready}
        for rid, replica in ready.items():
            ep = self.endpoints.get(rid)
            if ep is not None and ep.url == replica.url and (
                ep.routable or ep in self._retired or ep.lost.done()
            ):
                continue  # unchanged: routable, or being scaled away by the router, or declared hung
            if ep is not None:
                self._drain(ep)  # it went away and came back (or moved): a fresh endpoint
            self.endpoints[rid] = Endpoint(
                self.api_id, replica.url, self._health_threshold, self._retry_after, replica_id=rid
            )
            self._metrics.replica_requests.labels(model=self.api_id, replica=rid).set(0)
        for rid, ep in list(self.endpoints.items()):
            if rid not in ready:
                self._retired.discard(ep)  # the backend took it away: the scale-down is done
                self._drain(ep)

    def clear(self) -> None:
        """The model is unloaded: no replica takes requests (running ones finish or fail on their own)."""
        self._retired.clear()
        for ep in list(self.endpoints.values()):
            self._drain(ep)
        self.version = -1

    # -- routing ----------------------------------------------------------------------------------

    def routable(self) -> list[Endpoint]:
        return [ep for ep in self.endpoints.values() if ep.routable]

    def pick(self, scaling: Scaling, affinity: str | None, avoid: Collection[Endpoint] = ()) -> Endpoint | None:
        """The endpoint for the next request (counted as outstanding on it); None when none is routable.

        ``avoid``: endpoints that just failed this request (connection refused); another one takes the
        retry when there is one, else the same one is tried again."""
        routable = self.routable()
        if not routable:
            return None
        preferred = [ep for ep in routable if ep not in avoid] or routable
        key = None
        ring = None
        if scaling.routing == "prefix-affinity" and affinity is not None and len(preferred) > 1:
            key = stable_hash(affinity)
            ring = self._ring_of(routable)
        by_id = {ep.replica_id: ep for ep in preferred}
        chosen = choose(
            scaling.routing,
            [Candidate(ep.replica_id, ep.outstanding) for ep in preferred],
            turn=self._turn,
            ring=ring,
            key=key,
            load_bound=scaling.load_bound,
        )
        self._turn += 1
        endpoint = by_id[chosen.id]
        endpoint.enter()
        self._metrics.replica_requests.labels(model=self.api_id, replica=endpoint.replica_id).set(
            endpoint.outstanding
        )
        return endpoint

    def leave(self, endpoint: Endpoint) -> None:
        """A request picked onto ``endpoint`` has finished."""
        endpoint.leave()
        if self.endpoints.get(endpoint.replica_id) is endpoint:
            self._metrics.replica_requests.labels(model=self.api_id, replica=endpoint.replica_id).set(
                endpoint.outstanding
            )
        if endpoint.draining and endpoint.outstanding <= 0 and endpoint not in self._retired:
            self._drop(endpoint)

    def _ring_of(self, routable: list[Endpoint]) -> HashRing:
        ids = tuple(sorted(ep.replica_id for ep in routable))
        if self._ring is None or ids != self._ring_ids:
            self._ring, self._ring_ids = HashRing(ids), ids
        return self._ring

    # -- scaling down -----------------------------------------------------------------------------

    def retire(self, count: int) -> list[Endpoint]:
        """Drain the ``count`` least busy routable endpoints (the router scales them away next)."""
        chosen = sorted(self.routable(), key=lambda ep: ep.outstanding)[:count]
        for ep in chosen:
            self._retired.add(ep)
            self._drain(ep)
        return chosen

    def restore(self, endpoints: Collection[Endpoint]) -> None:
        """A scale-down that did not happen: its endpoints take requests again."""
        for ep in endpoints:
            self._retired.discard(ep)
            if self.endpoints.get(ep.replica_id) is ep and not ep.lost.done():
                ep.draining = False
        self.version = -1  # look at the backend's view again on the next sync

    def remove(self, endpoint: Endpoint) -> None:
        """Take one replica out now (declared hung): no new request, dropped when its requests end."""
        self._drain(endpoint)

    # -- bookkeeping ------------------------------------------------------------------------------

    def _drain(self, endpoint: Endpoint) -> None:
        endpoint.draining = True
        # A retired endpoint stays known (not routable) until the backend stops listing it, so the
        # backend's view cannot bring it back in the meantime.
        if endpoint.outstanding <= 0 and endpoint not in self._retired:
            self._drop(endpoint)

    def _drop(self, endpoint: Endpoint) -> None:
        self._retired.discard(endpoint)
        if self.endpoints.get(endpoint.replica_id) is endpoint:
            del self.endpoints[endpoint.replica_id]
            self._metrics.forget_replica(self.api_id, endpoint.replica_id)

    @property
    def ready_count(self) -> int:
        return len(self.routable())
