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

from unipose_ray.cli import add_run_flags, entry, job_parser, run_overrides
from unipose_ray.config import PRESETS, load_config
from unipose_ray.config.resume import check_resume
from unipose_ray.workflows.preflight import check_inputs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    add_run_flags(parser, config="demo", presets=PRESETS, output_dir="outputs/demo",
                  tracking=True, resume=True)
    return parser.parse_args(argv)


@entry
def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    config = load_config(args.config, run_overrides(args))
    check_inputs(config)
    check_resume(config, args.output_dir, anyway=args.resume_anyway)

    from unipose_ray.runtime.distributed import init_ray  # noqa: PLC0415
    from unipose_ray.workflows.distill import run_distill  # noqa: PLC0415 (seconds: after the checks)

    init_ray(args.address)
    return run_distill(config, args.output_dir)


if __name__ == "__main__":
    main()
