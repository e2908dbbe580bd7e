"""Multi-teacher distillation of a unified 21-keypoint RTMPose student.

    python jobs/distill.py --config demo                       # laptop: generated data
    python jobs/distill.py --config paper --output-dir runs/paper teachers.0.checkpoint=...
    ray job submit --working-dir . -- python jobs/distill.py --config demo

Attaches to a Ray cluster when one is given (``RAY_ADDRESS``, as ``ray job submit`` sets
it, or ``--address``); otherwise starts Ray locally. Started again with the same
``run.name`` and ``--output-dir``, a run resumes, and refuses settings other than those it
started with (``unipose_ray.config.resume``). Mistakes in the config or the inputs are reported
(exit code 2) before Ray and the model stack load.
"""

from __future__ import annotations

import argparse

from unipose_ray.cli import entry
from unipose_ray.config import PRESETS, load_config
from unipose_ray.config.resume import check_resume
from unipose_ray.workflows.preflight import check_inputs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo",
                        help=f"a preset ({', '.join(PRESETS)}) or a YAML file")
    parser.add_argument("--output-dir", default="outputs/demo", help="where everything is written")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI "
                        "or a SQLite store in the output dir)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    parser.add_argument("--resume-anyway", action="store_true",
                        help="resume a run although its settings changed (see the refusal)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.epochs=5")
    return parser.parse_args(argv)


@entry
def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.tracking_uri:
        overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    config = load_config(args.config, overrides)
    check_inputs(config)
    check_resume(config, args.output_dir, anyway=args.resume_anyway)

    from unipose_ray.runtime.distributed import init_ray  # noqa: PLC0415
    from unipose_ray.workflows.distill import run_distill  # noqa: PLC0415 (seconds: after the checks)

    init_ray(args.address)
    return run_distill(config, args.output_dir)


if __name__ == "__main__":
    main()
