"""A finished sweep, summed up: the table of trials (printed, JSON, CSV), the picture of
the metric against the weights, and the MLflow tags that mark the stopped and best trials.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np

from unipose_ray.evaluation.cross_dataset import as_percent, dataset_columns
from unipose_ray.skeleton import DATASET_SETS
from unipose_ray.workflows.sweep_trial import WEIGHT_KEY, short_params

BEST_TAG = "unipose_ray.best_trial"
STOPPED_TAG = "unipose_ray.stopped_early"
TABLE_METRICS = (*(f"val/{dataset_columns(d)[0]}" for d in DATASET_SETS), "val/unified_AP",
                 "val/transfer_PCK", "val/score")
"""The table's metrics (those the trials report): each dataset's headline figure, unified
AP, transfer PCK, score."""


def trial_id(result) -> str:
    """The Tune trial id of a result (from its folder name when it never reported)."""
    found = result.metrics.get("trial_id") if result.metrics else None
    if found:
        return found
    match = re.match(r"run_trial_([0-9a-f]+_\d+)_", Path(result.path).name)
    return match.group(1) if match else Path(result.path).name


def summary_rows(results, metric: str, mode: str, max_validations: int,
                 checkpoints: dict[str, Path | None]) -> list[dict]:
    """One row per trial, best first: its choices, the ``val/*`` metrics of its best
    validation, steps trained, whether ASHA stopped it, its best checkpoint.

    ``checkpoints``: trial id -> exported ``best.pth`` (``None``: never validated).
    """
    rows = []
    for result in results:
        frame = result.metrics_dataframe
        row: dict = {"trial": trial_id(result), **short_params(result.config)}
        if frame is not None and metric in frame and frame[metric].notna().any():
            best = frame[metric].idxmax() if mode == "max" else frame[metric].idxmin()
            row |= {k: float(frame.loc[best, k]) for k in frame.columns
                    if str(k).startswith("val/")}
            row["steps"] = int(frame["train/step"].max())
            row["validations"] = int(frame["training_iteration"].max())
        else:
            row |= {"steps": 0, "validations": 0}
        row["stopped_early"] = result.error is None and row["validations"] < max_validations
        row["checkpoint"] = str(checkpoints.get(row["trial"]) or "")
        row["error"] = str(result.error).strip().splitlines()[-1] if result.error else ""
        rows.append(row)
    sign = -1.0 if mode == "max" else 1.0
    return sorted(rows, key=lambda r: sign * r.get(metric, -sign * math.inf))


def write_summary(rows: list[dict], out: Path) -> tuple[Path, Path]:
    """``out/sweep_results.json`` and ``.csv`` (same rows, best first)."""
    json_path, csv_path = out / "sweep_results.json", out / "sweep_results.csv"
    json_path.write_text(json.dumps(rows, indent=2))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


def format_rows(rows: list[dict], metric: str) -> str:
    """The printed table: choices, headline metrics, steps, early stop."""
    choices = list(dict.fromkeys(k for row in rows for k in row
                                 if k == "size" or k.startswith(("w1", "w_")) or k == "lr"))
    reported = {k for row in rows for k in row}
    metrics = list(dict.fromkeys([*(m for m in TABLE_METRICS if m in reported), metric]))
    header = ["trial", *choices, *(m.removeprefix("val/") for m in metrics), "steps", "stopped"]
    lines = [header]
    for row in rows:
        cells = [row["trial"]]
        for key in choices:
            value = row.get(key, "")
            cells.append(f"{value:.3g}" if isinstance(value, float) else str(value))
        cells += [f"{as_percent(m, row[m]):.2f}" if m in row else "-" for m in metrics]
        cells += [str(row["steps"]), "ASHA" if row["stopped_early"] else
                  ("ERROR" if row["error"] else "no")]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
                     for line in lines)


def plot_weights(rows: list[dict], metric: str, reference: dict[str, float], path: Path
                 ) -> np.ndarray:
    """Scatter of ``metric`` against each weight (log axis), one panel per weight; trials
    ASHA stopped are hollow, the base config's weights a dashed line. Writes ``path`` (PNG)
    and returns the picture as RGB."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib import ticker  # noqa: PLC0415

    weights = [k for k in rows[0] if k.startswith(("w1", "w_"))] if rows else []
    scored = [r for r in rows if metric in r]
    sizes = sorted({r["size"] for r in scored})
    colours = dict(zip(sizes, ("tab:blue", "tab:orange", "tab:green"), strict=False))
    fig, axes = plt.subplots(1, max(1, len(weights)), figsize=(4.2 * max(1, len(weights)), 3.6),
                             sharey=True, squeeze=False)
    for ax, weight in zip(axes[0], weights, strict=False):
        for size in sizes:
            for stopped in (False, True):
                pts = [r for r in scored if r["size"] == size and r["stopped_early"] == stopped]
                if pts:
                    ax.scatter([r[weight] for r in pts], [r[metric] for r in pts], s=46,
                               facecolors="none" if stopped else colours[size],
                               edgecolors=colours[size],
                               label=f"{size}{' (stopped by ASHA)' if stopped else ''}")
        if weight in reference:
            ax.axvline(reference[weight], color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(weight)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    if scored:
        axes[0][0].legend(fontsize=8, title="student size", title_fontsize=8)
    fig.suptitle(f"{metric} of each trial's best validation (hollow: stopped by ASHA, so "
                 f"trained for fewer steps; dashed: the config's weights)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.canvas.draw()
    picture = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return picture


def reference_weights(config) -> dict[str, float]:
    """The base config's weights under the summary's names (the paper's, in its preset)."""
    params = {WEIGHT_KEY: {"w_gt": config.loss.w_gt,
                           **{t.name: t.weight for t in config.teachers}}, "size": ""}
    return {k: v for k, v in short_params(params).items() if k != "size"}


def tag_trials(tracking_uri: str, parent_run_id: str, rows: list[dict], run_keys: dict[str, str]
               ) -> None:
    """Tag each trial's MLflow run (stopped early, rank) and the parent (best trial); a
    trial ASHA stopped ends as KILLED (its workers never got to end the run)."""
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from unipose_ray.tracking.runs import RUN_KEY_TAG  # noqa: PLC0415

    client = MlflowClient(tracking_uri)
    experiment = client.get_run(parent_run_id).info.experiment_id
    for i, row in enumerate(rows):
        key = run_keys[row["trial"]]
        found = client.search_runs([experiment], max_results=1,
                                   filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'")
        if not found:
            continue
        run_id = found[0].info.run_id
        client.set_tag(run_id, STOPPED_TAG, str(row["stopped_early"]).lower())
        if found[0].info.status == "RUNNING":  # ASHA killed it, or it failed, mid-run
            last = max((m.timestamp for m in client.get_metric_history(run_id, "train/loss")),
                       default=None)
            client.set_terminated(run_id, "FAILED" if row["error"] else "KILLED", end_time=last)
        client.set_tag(run_id, "unipose_ray.sweep_rank", str(i + 1))
        if i == 0:
            client.set_tag(parent_run_id, BEST_TAG, row["trial"])
            client.set_tag(parent_run_id, "unipose_ray.best_run_id", run_id)
