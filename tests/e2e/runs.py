"""What a Ray Train run leaves in its storage, read as a restart reads it."""

from __future__ import annotations

import json
from pathlib import Path


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
