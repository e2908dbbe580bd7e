"""Train the demo's released models once and write them, with a manifest, into released/.

    python jobs/release_demo_models.py        # about 1.5 hours on a 2-core CPU
    python jobs/release_demo_models.py --config demo_body_models --release-dir released/demo_body

Preset ``demo_models``: a CSPNeXt-t backbone trained on UDP heatmaps of generated COCO
images (the stand-in for MMPose's ``cspnext-t_udp-aic-coco``), then an RTMPose-t COCO
teacher (96x128) and MPII teacher (96x96) from it, each on 8000 generated images of its
dataset. Writes into ``--release-dir``: fp16 MMPose checkpoints, the teachers' MMPose
configs, and ``manifest.json``: the sha256 of each file, this command, the seeds, the
generator's and preset's sha256, and each teacher's metrics on the demo's validation sets
as ``jobs/evaluate.py`` measures them. Started again, it reuses finished trainings.

A config with ``student.backbone_checkpoint`` (``demo_body_models``: the Halpe-26 teacher)
trains its teachers from that backbone instead of pretraining one, and the manifest names
the backbone by path and sha256 instead of releasing it again.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from unipose_ray.cli import add_run_flags, entry, job_parser
from unipose_ray.config import PRESETS, DistillConfig, load_config, preset_path
from unipose_ray.evaluation.cross_dataset import table_columns
from unipose_ray.models.checkpoints import half_checkpoint
from unipose_ray.models.release import MANIFEST_NAME, sha256_of, write_manifest
from unipose_ray.runtime.distributed import init_ray
from unipose_ray.tracking.runs import RunTracker
from unipose_ray.tracking.uris import resolve_tracking_uri
from unipose_ray.workflows.training import (
    PreparedData,
    ensure_backbone,
    ensure_teachers,
    prepare_data,
)

REPO = Path(__file__).resolve().parents[1]


@entry
def main(argv: list[str] | None = None) -> dict:
    parser = job_parser(__doc__)
    add_run_flags(parser, config="demo_models", presets=PRESETS, output_dir="outputs/demo_models",
                  output_help="training runs and data", example="teacher_epochs=8")
    parser.add_argument("--release-dir", default="released/demo", help="where the files go")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "jobs/release_demo_models.py", *(argv if argv is not None else sys.argv[1:])])

    config = load_config(args.config, args.overrides)
    if (config.pretrain is None) == (config.student.backbone_checkpoint is None):
        parser.error("the release trains its teachers from a backbone: the config needs a "
                     "pretrain section (a backbone trained and released here) or a "
                     "student.backbone_checkpoint (an earlier release's), not both")
    given_backbone = config.student.backbone_checkpoint
    init_ray(args.address)
    output_dir = Path(args.output_dir).resolve()
    config, data = prepare_data(config, output_dir)
    RunTracker(resolve_tracking_uri(config.tracking.tracking_uri, output_dir)).prepare(
        config.tracking.experiment)
    config = ensure_teachers(ensure_backbone(config, data, output_dir), data, output_dir)

    release = Path(args.release_dir)
    release.mkdir(parents=True, exist_ok=True)
    (release / MANIFEST_NAME).unlink(missing_ok=True)  # the old one would refuse the new files
    files = write_files(config, release, given_backbone)
    metrics = {name: evaluate(release, paths, data) for name, paths in files["teachers"].items()}
    info = {
        "command": command,
        "preset": args.config,
        "preset_sha256": sha256_of(preset_path(args.config) if args.config in PRESETS else args.config),
        "overrides": args.overrides,
        "git_commit": git_commit(),
        "seeds": {"generate": config.generate["seed"], "run": config.run.seed},
        # the generator's modules in name order (before they were split: synthetic.py)
        "generator_sha256": sha256_of(*sorted((REPO / "unipose_ray" / "data" / "synthetic")
                                              .glob("*.py"))),
        "generate": config.generate,
        "backbone": files["backbone"],
        "datasets": list(config.datasets),
        "skeleton": list(config.skeleton.names),
        "teachers": {name: {**paths, "metrics": metrics[name]["metrics"],
                            "evaluate_command": metrics[name]["command"]}
                     for name, paths in files["teachers"].items()},
    }
    manifest = write_manifest(release, info)
    total = sum(p.stat().st_size for p in release.iterdir() if p.is_file())
    headline = table_columns(config.datasets, transfer=False)
    for name, m in metrics.items():  # --output writes the table's units (AP in %)
        print(f"teacher {name}: " + ", ".join(
            f"{k} {v:.2f}" for k, v in m["metrics"].items() if v is not None and k in headline))
    what = "" if given_backbone else " and a backbone"
    print(f"released {len(info['teachers'])} teacher(s){what} into {release} "
          f"({total / 2**20:.1f} MiB); manifest: {manifest}")
    return info


def write_files(config: DistillConfig, release: Path, given_backbone: str | None = None) -> dict:
    """fp16 copies of the backbone trained here (a given one is named, not copied) and of
    the teachers (checkpoint + MMPose config)."""
    if given_backbone is not None:
        backbone = {"path": os.path.relpath(given_backbone, REPO),
                    "sha256": sha256_of(given_backbone)}
    else:
        w, h = config.student.codec.input_size
        backbone = f"cspnext-{config.student.size}_udp-demo-{config.pretrain.dataset}_{w}x{h}.pth"
        half_checkpoint(config.student.backbone_checkpoint, release / backbone, keep="backbone.")
    teachers = {}
    for teacher in config.teachers:
        codec = teacher.train_codec or config.student.codec
        stem = f"rtmpose-{teacher.train_size}_demo-{teacher.dataset}_{codec.input_size[0]}x{codec.input_size[1]}"
        shutil.copyfile(teacher.config, release / f"{stem}.py")
        half_checkpoint(teacher.checkpoint, release / f"{stem}.pth")
        teachers[teacher.name] = {"dataset": teacher.dataset, "config": f"{stem}.py",
                                  "checkpoint": f"{stem}.pth"}
    return {"backbone": backbone, "teachers": teachers}


def evaluate(release: Path, paths: dict, data: PreparedData) -> dict:
    """Run ``jobs/evaluate.py`` on a released teacher and both validation sets."""
    args = ["--model-config", release / paths["config"], "--checkpoint", release / paths["checkpoint"]]
    for s in data.eval_sets:
        args += [f"--{s.name}-ann", s.ann_file, f"--{s.name}-img-dir", s.img_dir]
        if s.unified_ann_file:
            args += [f"--{s.name}-unified-ann", s.unified_ann_file]
    args = [os.path.relpath(a) if isinstance(a, Path) or os.path.isabs(a) else a for a in args]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "metrics.json"
        subprocess.run([sys.executable, str(REPO / "jobs" / "evaluate.py"), *args,
                        "--output", str(out)], check=True)
        metrics = json.loads(out.read_text())
    return {"metrics": metrics, "command": shlex.join(["python", "jobs/evaluate.py", *args])}


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    main()
