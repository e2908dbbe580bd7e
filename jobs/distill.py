"""Multi-teacher distillation of a unified 21-keypoint RTMPose student.

    python jobs/distill.py --config demo                       # laptop: generated data
    python jobs/distill.py --config paper --output-dir runs/paper teachers.0.checkpoint=...
    ray job submit --working-dir . -- python jobs/distill.py --config demo

Attaches to a Ray cluster when one is given (``RAY_ADDRESS``, as ``ray job submit`` sets
it, or ``--address``); otherwise starts Ray locally.
"""

from __future__ import annotations

import argparse

from unipose_ray.config import PRESETS, load_config
from unipose_ray.distributed import init_ray
from unipose_ray.distill import run_distill


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo",
                        help=f"a preset ({', '.join(PRESETS)}) or a YAML file")
    parser.add_argument("--output-dir", default="outputs/demo", help="where everything is written")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI "
                        "or a SQLite store in the output dir)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.epochs=5")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.tracking_uri:
        overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    config = load_config(args.config, overrides)
    init_ray(args.address)
    run_distill(config, args.output_dir)


if __name__ == "__main__":
    main()
