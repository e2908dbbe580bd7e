"""Ray Tune sweep of the loss weights (w1/w2/w3) and the student size, tracked in MLflow.

    python jobs/sweep.py --config demo_sweep
    ray job submit --working-dir . -- python jobs/sweep.py --config my_sweep.yaml \\
        --num-samples 16 --output-dir /shared/sweeps/kd --tracking-uri http://mlflow:5000

Every trial trains a distilled student from the teacher-logit cache (built first when
missing: teacher compute paid once). ASHA stops poor trials at validations. Started again
with the same --output-dir, an interrupted sweep resumes (``Tuner.restore``): finished
trials keep their results. Writes DIR/sweep_results.json and .csv (best first),
DIR/sweep_weights.png and DIR/best_trial.txt; one MLflow parent run, a child per trial.
"""

from __future__ import annotations

import argparse
import sys

from unipose_ray.cli import add_run_flags, entry, job_parser, run_overrides
from unipose_ray.config import PRESETS, load_config
from unipose_ray.config.resume import check_resume
from unipose_ray.workflows.preflight import check_inputs, check_sweep


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    add_run_flags(parser, config="demo_sweep", presets=PRESETS, output_dir="outputs/sweep",
                  output_help="data, cache, trials, Tune state and the summary (resume: same)",
                  tracking=True, resume=True, example="sweep.sizes=[t,s] sweep.search=grid")
    parser.add_argument("--num-samples", type=int, help="trials (sweep.num_samples)")
    return parser.parse_args(argv)


@entry
def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    overrides = run_overrides(args)
    if args.num_samples:
        overrides.append(f"sweep.num_samples={args.num_samples}")
    config = load_config(args.config, overrides)
    check_sweep(config)
    check_inputs(config, sweep=True)
    check_resume(config, args.output_dir, anyway=args.resume_anyway)

    from unipose_ray.runtime.distributed import init_ray  # noqa: PLC0415 (seconds: after the checks)
    from unipose_ray.runtime.output import quiet_ray_data  # noqa: PLC0415
    from unipose_ray.workflows.sweep import SweepInterrupted, run_sweep  # noqa: PLC0415

    init_ray(args.address)
    quiet_ray_data()
    try:
        return run_sweep(config, args.output_dir)
    except SweepInterrupted as stopped:
        print(f"\n{stopped}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
