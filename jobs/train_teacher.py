"""Train a single-dataset teacher (the paper's "self-trained teacher") on Ray Train.

    python jobs/train_teacher.py --config demo --teacher mpii --output-dir outputs/demo

Same loop as the student, on one dataset with its own keypoint set and input size, no KD
terms. Writes an MMPose config + checkpoint that ``jobs/distill.py`` (or MMPose) can load.
"""

from __future__ import annotations

import argparse

from unipose_ray.config import PRESETS, load_config
from unipose_ray.distributed import init_ray
from unipose_ray.workflow import run_train_teacher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo", help=f"a preset ({', '.join(PRESETS)}) or YAML")
    parser.add_argument("--teacher", required=True, help="name of a teacher in the config")
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. teacher_epochs=20")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    init_ray(args.address)
    run_train_teacher(config, args.teacher, args.output_dir)


if __name__ == "__main__":
    main()
