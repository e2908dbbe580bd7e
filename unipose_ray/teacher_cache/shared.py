"""One reading of a cache view per run, shared by every crop stage through the object store.

Without it each crop stage reads every shard of view ``v`` when its epoch turns to ``v``
(COCO, 337 shards: 293 MB per view per stage; 16 stages read 4.7 GB an epoch). The run's
:class:`ViewHub` actor reads a view once and ``ray.put`` s it; stages ``ray.get`` the same
object, which Ray copies once to each node and maps there without copying
(:class:`ViewTargets` is NumPy arrays). Which targets a row gets does not depend on who
read them, so batches, replays and resumed workers are unchanged.
"""

from __future__ import annotations

from unipose_ray.teacher_cache.source import CacheSource, ViewTargets


class ViewHub:
    """Ray actor (one per run, made by the driver): view -> the object of its targets.

    Keeps the object of the ``keep`` views asked for last (stages near an epoch change ask
    for two); an older one is freed once no stage holds it.
    """

    def __init__(self, source: CacheSource, num_records: int, keep: int = 2):
        self.source, self.num_records, self.keep = source, num_records, keep
        self._refs: dict = {}  # view -> ObjectRef, the least recently asked first
        self.reads = 0

    def view(self, view: int) -> list:
        """``[ObjectRef of ViewTargets(view)]`` (in a list: Ray hands back the reference,
        not the value), reading the view only when it is not held."""
        import ray  # noqa: PLC0415

        ref = self._refs.pop(view, None)
        if ref is None:
            ref = ray.put(ViewTargets(self.source, view, self.num_records))
            self.reads += 1
        self._refs[view] = ref
        while len(self._refs) > self.keep:
            self._refs.pop(next(iter(self._refs)))
        return [ref]

    def views_read(self) -> int:
        """How many times a view was read from the cache (each costs its shards)."""
        return self.reads


def start_view_hub(source: CacheSource, num_records: int):
    """The run's :class:`ViewHub` actor. It holds no CPU (it waits on storage, then
    decompresses once an epoch); restarted if it dies, and then it reads again."""
    import ray  # noqa: PLC0415

    return ray.remote(ViewHub).options(num_cpus=0, max_restarts=-1, max_task_retries=-1
                                       ).remote(source, num_records)


def shared_view(hub, view: int) -> ViewTargets:
    """View ``view``'s targets from the run's hub (zero-copy on this node). A hub that died
    took its objects with it; the restarted one reads the view again."""
    import ray  # noqa: PLC0415

    for attempt in range(2):
        (ref,) = ray.get(hub.view.remote(view))
        try:
            return ray.get(ref)
        except ray.exceptions.ObjectLostError:
            if attempt:
                raise
    raise AssertionError("unreachable")
