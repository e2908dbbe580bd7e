"""What runs leave behind: a Ray Train run's storage, read as a restart reads it, and the
actors and placement groups still alive on a Ray."""

from __future__ import annotations

import json
import time
from pathlib import Path

# Ray Data's own actors, started by its first pipeline and kept for the cluster's life:
# not a run's leftovers
CLUSTER_ACTORS = {"_StatsActor", "AutoscalingRequester", "ActorLocationTracker",
                  "_AutoscalingCoordinatorActor"}


def registered_steps(run_storage: Path) -> list[int]:
    """Steps of the checkpoints Ray Train's controller has registered (what a restart
    sees); ``run_storage`` is ``<storage_path>/<run name>``."""
    try:
        results = json.loads((run_storage / "checkpoint_manager_snapshot.json").read_text())
        return [r["metrics"]["train/step"] for r in results["checkpoint_results"]]
    except (OSError, ValueError, KeyError):  # not written yet, or being rewritten
        return []


def final_state(run_dir: Path, name: str) -> dict:
    """The training state (``state.pt``: weights, optimiser, EMA, step) of the latest
    checkpoint of run ``name`` whose output folder is ``run_dir``."""
    import ray.train
    import torch

    result = ray.train.Result.from_path(str(run_dir / "ray_results" / name))
    with result.checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=True)


def assert_same_weights(state: dict, reference: dict) -> None:
    """Two training states hold the very same weights and EMA weights, to the bit."""
    import torch

    for part in ("model", "ema"):
        ours = state[part] if part == "model" else state[part]["module"]
        theirs = reference[part] if part == "model" else reference[part]["module"]
        assert ours.keys() == theirs.keys(), part
        for name, tensor in theirs.items():
            torch.testing.assert_close(ours[name], tensor, rtol=0, atol=0, msg=f"{part}: {name}")


def leftovers(address: str, wait_s: float = 0) -> dict[str, list[str]]:
    """Actors (by class) and placement groups alive on the Ray at ``address`` (a dashboard
    URL), Ray Data's own aside; waits up to ``wait_s`` for them to go (actors die and
    groups are removed asynchronously)."""
    from ray.util.state import list_actors, list_placement_groups

    deadline = time.monotonic() + wait_s
    while True:
        actors = sorted(a.class_name for a in list_actors(
            address=address, filters=[("state", "!=", "DEAD")], limit=10_000,
            raise_on_missing_output=False) if a.class_name not in CLUSTER_ACTORS)
        groups = sorted(f"{g.name or g.placement_group_id} ({g.state})"
                        for g in list_placement_groups(
                            address=address, filters=[("state", "!=", "REMOVED")],
                            limit=10_000, raise_on_missing_output=False))
        left = {name: found for name, found in (("actors", actors),
                                                 ("placement groups", groups)) if found}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(1)
