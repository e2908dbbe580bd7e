"""Train a single-dataset teacher (the paper's "self-trained teacher") on Ray Train.

    python jobs/train_teacher.py --config demo --teacher mpii --output-dir outputs/demo

Same loop as the student, on one dataset with its own keypoint set and input size, no KD
terms. Writes an MMPose config + checkpoint that ``jobs/distill.py`` (or MMPose) can load.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from unipose_ray.cli import entry
from unipose_ray.config import PRESETS, ConfigError, load_config
from unipose_ray.config.resume import check_resume
from unipose_ray.workflows.preflight import check_inputs


@entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo", help=f"a preset ({', '.join(PRESETS)}) or YAML")
    parser.add_argument("--teacher", required=True, help="name of a teacher in the config")
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    parser.add_argument("--resume-anyway", action="store_true",
                        help="resume a run although its settings changed (see the refusal)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. teacher_epochs=20")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    teachers = {t.name: t for t in config.teachers}
    if args.teacher not in teachers:
        raise ConfigError(f"--teacher {args.teacher}: the config's teachers are {list(teachers)}")
    own = replace(config, teachers=(replace(teachers[args.teacher], checkpoint=None),))
    check_inputs(own)  # its checkpoint is what this job makes
    run = f"{config.run.name}_teacher_{args.teacher}"
    check_resume(replace(own, run=replace(own.run, name=run)), args.output_dir,
                 anyway=args.resume_anyway)

    from unipose_ray.runtime.distributed import init_ray  # noqa: PLC0415 (seconds: after the checks)
    from unipose_ray.workflows.training import run_train_teacher  # noqa: PLC0415

    init_ray(args.address)
    run_train_teacher(config, args.teacher, args.output_dir)


if __name__ == "__main__":
    main()
