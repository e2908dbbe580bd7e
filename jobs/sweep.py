"""Ray Tune sweep of the loss weights (w1/w2/w3) and the student size, tracked in MLflow.

    python jobs/sweep.py --config demo_sweep --num-samples 6
    ray job submit --working-dir . -- python jobs/sweep.py --config paper --num-samples 16 ...

Every trial trains a distilled student from the teacher-logit cache (built first when
missing: teacher compute paid once). ASHA stops poor trials at validations. A sweep
started again with the same --output-dir resumes (``Tuner.restore``): finished trials keep
their results. Writes DIR/sweep_results.json and .csv, best first.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path

from unipose_ray.config import PRESETS, load_config
from unipose_ray.distributed import init_ray, print0
from unipose_ray.sweep import (
    SweepBase,
    concurrent_trials,
    param_space,
    progress_callback,
    run_trial,
    summary_rows,
)
from unipose_ray.teachers.cache_build import ensure_cache
from unipose_ray.tracking import RunTracker, flatten_config, resolve_tracking_uri
from unipose_ray.workflow import check_teachers, ensure_backbone, prepare_data, resolve_teachers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo", help=f"a preset ({', '.join(PRESETS)}) or YAML")
    parser.add_argument("--num-samples", type=int, help="trials (sweep.num_samples)")
    parser.add_argument("--output-dir", default="outputs/sweep")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. sweep.sizes=[t,s]")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    import ray  # noqa: PLC0415
    from ray import tune  # noqa: PLC0415
    from ray.tune.schedulers import ASHAScheduler  # noqa: PLC0415

    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.num_samples:
        overrides.append(f"sweep.num_samples={args.num_samples}")
    if args.tracking_uri:
        overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    out = Path(args.output_dir).resolve()
    config = load_config(args.config, overrides)
    if config.teacher_cache.uri is None:
        config = replace(config, teacher_cache=replace(config.teacher_cache,
                                                       uri=str(out / "teacher_cache")))
    init_ray(args.address)
    config, data = prepare_data(config, out)
    config = resolve_teachers(ensure_backbone(config, data, out))
    specs = check_teachers(config)
    records = data.train_records(sorted(data.train), out / "records")
    ensure_cache(config, records, specs)

    uri = resolve_tracking_uri(config.tracking.tracking_uri, out)
    parent = RunTracker(uri).start(
        config.tracking.experiment, f"{config.run.name}_sweep", params=flatten_config(config),
        tags={"unipose_ray.kind": "sweep"}, key=f"sweep:{config.run.name}@{out}")
    base = SweepBase(config, records, data.eval_sets, specs, str(out), uri, parent.run_id)
    sweep = config.sweep
    trainable = tune.with_parameters(run_trial, base=base)
    storage = str(out / "tune")
    name = f"{config.run.name}_sweep"
    if tune.Tuner.can_restore(f"{storage}/{name}"):
        print0(f"resuming the sweep in {storage}/{name}")
        tuner = tune.Tuner.restore(f"{storage}/{name}", trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space=param_space(config),
            tune_config=tune.TuneConfig(
                metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
                max_concurrent_trials=concurrent_trials(config, ray.cluster_resources()["CPU"]),
                scheduler=ASHAScheduler(time_attr="training_iteration",
                                        grace_period=sweep.grace_period,
                                        reduction_factor=sweep.reduction_factor,
                                        max_t=config.optim.epochs // config.run.val_every_epochs)),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                      callbacks=[progress_callback(sweep.metric)]))
    results = tuner.fit()
    rows = summary_rows(results, sweep.metric, sweep.mode)
    (out / "sweep_results.json").write_text(json.dumps(rows, indent=2))
    with (out / "sweep_results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    parent.log_artifact(out / "sweep_results.json")
    if rows:
        parent.set_tags({"unipose_ray.best_trial": rows[0]["trial"]})
    parent.end("FINISHED")
    for row in rows:
        print0(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()
