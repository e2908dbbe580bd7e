"""Build the teacher-logit cache: every teacher's targets for K augmentation views of every
training instance, once, for every later run and Tune trial.

    python jobs/build_cache.py --config demo --views 6 --out outputs/demo/teacher_cache
    python jobs/distill.py --config demo teacher_cache.uri=outputs/demo/teacher_cache
    ray job submit --working-dir . -- python jobs/build_cache.py --config paper \\
        --out s3://bucket/unipose/cache-paper --views 10 teachers.0.checkpoint=...

A cache holds crops of the stage-1 augmentation (this job sets ``augment.stage2_epochs=0``):
a run reading one trains without RTMPose's stage-2 switch and says so in its config
(``augment.stage2_epochs=0``; a config asking for both is refused, naming the fields).

A Ray Data pipeline (crop actors, one actor pool per teacher on the GPUs its config asks
for) writes Parquet shards and a manifest of everything the targets depend on. Started
again, it adds only the shards that are missing; a folder holding a cache of other
settings is refused with the fields that differ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from unipose_ray.cli import add_run_flags, entry, job_parser
from unipose_ray.config import PRESETS, ConfigError, load_config
from unipose_ray.workflows.preflight import check_inputs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    add_run_flags(parser, config="demo", presets=PRESETS, output_dir="outputs/demo",
                  output_help="where the records (and generated data) are, as for distill.py",
                  example="run.seed=1")
    parser.add_argument("--out", help="cache folder or URI (default: teacher_cache.uri, else "
                        "<output-dir>/teacher_cache)")
    parser.add_argument("--views", type=int, help="augmentation views per instance "
                        "(teacher_cache.views); 1 with augmentation off is the plain crop")
    parser.add_argument("--components", type=int, help="basis components per teacher joint "
                        "(teacher_cache.components, the default format; 0: --topk's)")
    parser.add_argument("--topk", type=int, help="top-k bins per axis per joint instead of a "
                        "basis (teacher_cache.topk; 0: every bin in fp16)")
    return parser.parse_args(argv)


@entry
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # a cache holds stage-1 crops (RTMPose's stage-2 switch has no views in it); a stage-2
    # number asked for on the command line still comes after this and is refused
    overrides = ["augment.stage2_epochs=0", *args.overrides]
    out = args.out or None
    if out is None and not any(o.startswith("teacher_cache.uri=") for o in overrides):
        out = str(Path(args.output_dir) / "teacher_cache")
    if args.topk is not None and args.components is None:
        args.components = 0  # --topk asks for the top-k format
    for key, value in (("uri", out), ("views", args.views), ("components", args.components),
                       ("topk", args.topk)):
        if value is not None:
            overrides.append(f"teacher_cache.{key}={value}")
    config = load_config(args.config, overrides)
    check_inputs(config)
    if not config.teachers:
        raise ConfigError(f"--config {args.config}: no teachers, so no targets to cache")

    from unipose_ray.runtime.distributed import init_ray  # noqa: PLC0415 (seconds: after the checks)
    from unipose_ray.teacher_cache.build import build_cache  # noqa: PLC0415
    from unipose_ray.workflows.training import check_teachers, prepare_data, resolve_teachers  # noqa: PLC0415

    init_ray(args.address)
    output_dir = Path(args.output_dir).resolve()
    config, data = prepare_data(config, output_dir)
    config = resolve_teachers(config)
    specs = check_teachers(config)
    datasets = sorted(data.train)
    build_cache(config, data.train_records(datasets, output_dir / "records"), specs,
                crop_actors=max(1, config.run.data_actors))


if __name__ == "__main__":
    main()
