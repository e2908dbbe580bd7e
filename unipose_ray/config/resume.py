"""A run started again is the same run: other settings are refused, not silently ignored.

A job started with the ``run.name`` and output folder of an earlier one resumes it: Ray
Train restores its latest checkpoint, a finished run trains nothing more and the job
reports the old results. Had the user changed the loss weights, the learning rate or the
data, those results would pass for the new settings' (a loop over ``loss.w_gt`` printing
the same table each time). So each job records the config it started with
(``<output_dir>/configs/<run.name>.json``) and compares a later start against it before
any work:

- settings that leave what was trained as it is may change: more epochs (the schedule
  grows, as a resumed run extends it), retries, placement and parallelism, the tracking
  server, where the run keeps its checkpoints;
- a path may change when it names the same file (a moved dataset or checkpoint: same
  size and same first and last MiB);
- anything else is refused, naming each field with both values and the two ways out: a new
  ``run.name`` or output folder, or ``--resume-anyway`` (the run continues from its
  checkpoint under the new settings, and the record is updated).

The record is only compared when the earlier start left trained state (its Ray Train
storage); a start that failed before training can be retried with other settings. Imports
nothing heavy.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

from unipose_ray.cli import UsageError
from unipose_ray.config import DistillConfig
from unipose_ray.config.loading import to_plain
from unipose_ray.paths import is_uri

MAY_CHANGE = (
    "optim.epochs", "teacher_epochs", "pretrain.epochs",  # may grow (see GROW_ONLY)
    "run.max_failures", "run.resource_wait_s", "run.data_actors", "run.cpus_per_worker",
    "run.eval_workers", "run.worker_resources.*", "run.checkpoint_every_steps",
    "run.storage_path",
    "teachers.*.replicas", "teachers.*.num_gpus", "teachers.*.num_cpus",
    "teachers.*.resources.*", "teacher_cache.actors", "teacher_cache.batch_size",
    "tracking.tracking_uri", "parallel_runs", "sweep.max_concurrent_trials",
)
"""Fields (``fnmatch`` patterns over the flat names) a resumed run may take new values of:
they do not change what was trained (``run.data_actors`` makes the same batches)."""
GROW_ONLY = ("optim.epochs", "teacher_epochs", "pretrain.epochs")
PATHS = (
    "data.*.ann_file", "data.*.img_dir", "data.*.headbox_file", "data.*.unified_ann_file",
    "data.*.bbox_file", "student.backbone_checkpoint", "teachers.*.config",
    "teachers.*.checkpoint", "teacher_cache.uri", "sweep.backbones.*",
)
"""Fields that name files: compared by the file they name, not by how it is written."""
SAMPLE = 1 << 20


class ResumeMismatch(UsageError):
    """The run to be resumed was started with other settings."""


def record_path(output_dir: str | Path, run_name: str) -> Path:
    return Path(output_dir) / "configs" / f"{run_name}.json"


def check_resume(config: DistillConfig, output_dir: str | Path, anyway: bool = False
                 ) -> list[str]:
    """Compare ``config`` with the one the run started with (when that start trained
    anything), then record it.

    Args:
        anyway: ``--resume-anyway``: go on despite differences (they are returned).

    Returns:
        The differences taken (empty unless ``anyway``).

    Raises:
        ResumeMismatch: the settings differ and ``anyway`` is not set.
    """
    path = record_path(output_dir, config.run.name)
    now = fingerprint(config)
    changes = []
    if has_trained(config, output_dir) and path.is_file():
        changes = differences(json.loads(path.read_text()), now)
        if changes and not anyway:
            raise ResumeMismatch(
                f"the run '{config.run.name}' in {Path(output_dir)} was started with other "
                "settings, and resuming it would continue (or, finished, only re-report) "
                "what those trained:\n  " + "\n  ".join(changes) + "\nStart a new run "
                "instead (another run.name=..., or another --output-dir), or pass "
                "--resume-anyway to continue this one from its checkpoint under the new "
                "settings")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(now, indent=1, sort_keys=True))
    return changes


def has_trained(config: DistillConfig, output_dir: str | Path) -> bool:
    """An earlier start left training state: a model folder of this run, its joint
    student's, teachers' or pretraining's (``models/<run.name>[_*]``), or its sweep's Tune
    folder (``tune/<run.name>_sweep``)."""
    out, name = Path(output_dir), config.run.name
    models = out / "models"
    return ((models.is_dir() and any(p.name == name or p.name.startswith(f"{name}_")
                                     for p in models.iterdir()))
            or (out / "tune" / f"{name}_sweep").is_dir())


def fingerprint(config: DistillConfig) -> dict[str, object]:
    """The config's flat values, each path field as the identity of the file it names."""
    flat = flatten(to_plain(config))
    return {key: file_identity(value) if _matches(key, PATHS) and value else value
            for key, value in flat.items()}


def differences(started: dict, now: dict) -> list[str]:
    """``field: started -> now`` for each difference a resumed run may not take."""
    lines = []
    for key in sorted(set(started) | set(now)):
        old, new = started.get(key), now.get(key)
        if _same(old, new) or _matches(key, MAY_CHANGE) and not _shrinks(key, old, new):
            continue
        if _matches(key, GROW_ONLY):
            lines.append(f"{key}: {old} -> {new} (a run's epochs can grow, not shrink: its "
                         "schedule was set by the larger number)")
        else:
            lines.append(f"{key}: {_shown(old)} -> {_shown(new)}")
    return lines


def file_identity(path: str) -> object:
    """What tells a file apart from another wherever it lies: ``{size, sha256 of its first
    and last MiB}``; a folder, a missing file or a URI: its path as written (a folder's
    contents are judged by the annotation files that list them)."""
    if is_uri(path) or not Path(path).is_file():
        return path
    local = Path(path)
    size = local.stat().st_size
    digest = hashlib.sha256()
    with open(local, "rb") as f:
        digest.update(f.read(SAMPLE))
        if size > SAMPLE:
            f.seek(max(SAMPLE, size - SAMPLE))
            digest.update(f.read())
    return {"file": local.name, "size": size, "sha256": digest.hexdigest()[:16]}


def flatten(values: object, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": [1, 2]}}`` -> ``{"a.b.0": 1, "a.b.1": 2}``; empty containers kept."""
    if isinstance(values, dict) and values:
        items = values.items()
    elif isinstance(values, list) and values and any(isinstance(v, dict | list) for v in values):
        items = enumerate(values)
    else:
        return {prefix: values}
    flat = {}
    for key, value in items:
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def _same(old: object, new: object) -> bool:
    """Equal values; files by their size and contents, whatever their names."""
    if isinstance(old, dict) and isinstance(new, dict) and "sha256" in old:
        return (old["size"], old["sha256"]) == (new.get("size"), new.get("sha256"))
    return old == new


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def _shrinks(key: str, old: object, new: object) -> bool:
    return (_matches(key, GROW_ONLY) and isinstance(old, int) and isinstance(new, int)
            and new < old)


def _shown(value: object) -> str:
    if isinstance(value, dict) and "sha256" in value:
        return f"{value['file']} ({value['size']} bytes, {value['sha256']})"
    return json.dumps(value)
