"""A user's mistake is one message and exit code 2, before Ray, MLflow or the model stack
load (``unipose_ray.cli``, ``unipose_ray.workflows.preflight``, ``unipose_ray.config.resume``).

Each job runs as a user runs it (``python jobs/<job>.py ...`` in a fresh process), and
reports which heavy modules it had imported when it exited.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO

from unipose_ray.config import PRESETS, load_config
from unipose_ray.config.resume import check_resume

HEAVY = ("torch", "ray", "mlflow", "mmpose", "mmengine", "cv2", "pyarrow")
RUN = f"""
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("HEAVY " + ",".join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)
"""


def run_job(job: str, *args: str, cwd=REPO) -> tuple[int, list[str], list[str]]:
    """Exit code, stderr's lines (the last one, the heavy modules, apart) and those modules."""
    proc = subprocess.run([sys.executable, "-c", RUN, str(REPO / "jobs" / f"{job}.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    *lines, heavy = proc.stderr.splitlines()
    return proc.returncode, lines, [m for m in heavy.removeprefix("HEAVY ").split(",") if m]


def test_a_typo_in_the_preset_is_one_line_naming_the_presets():
    code, lines, heavy = run_job("distill", "--config", "demoo")
    assert code == 2 and heavy == []
    assert lines == [f"distill.py: error: --config demoo: neither a preset ({', '.join(PRESETS)}) "
                     "nor a YAML file; did you mean demo?"]


@pytest.mark.parametrize(("job", "args", "message"), [
    ("distill", ["loss.w_gt=-1"], "loss.w_gt must be >= 0, got -1.0"),
    ("distill", ["optim.epochs=many"], "optim.epochs: expected int, got 'many'"),
    ("sweep", ["sweep.search=bayes"], "sweep.search must be one of ('random', 'grid')"),
    ("build_cache", ["teacher_cache.viewz=3"], "teacher_cache: unknown key(s) ['viewz']"),
    ("train_teacher", ["--teacher", "crowdpose"], "--teacher crowdpose: the config's teachers "
                                                  "are ['coco', 'mpii']"),
])
def test_a_config_mistake_exits_2_with_one_line_and_no_traceback(job, args, message):
    code, lines, heavy = run_job(job, *args)
    assert code == 2 and heavy == []
    assert len(lines) == 1 and lines[0].startswith(f"{job}.py: error: ") and message in lines[0]


@pytest.mark.parametrize("job", ["distill", "build_cache"])
def test_every_missing_input_of_the_paper_preset_is_named_at_once(job, tmp_path):
    code, lines, heavy = run_job(job, "--config", "paper", "--output-dir", str(tmp_path),
                                 cwd=tmp_path)
    assert code == 2 and heavy == []
    config = load_config("paper")
    fields = ([f"data.{split}.{name}" for split, files in config.data.splits().items()
               for name in ("ann_file", "img_dir", "headbox_file") if getattr(files, name)]
              + ["student.backbone_checkpoint"]
              + [f"teachers.{i}.{what}" for i in (0, 1) for what in ("config", "checkpoint")])
    assert lines[0] == f"{job}.py: error: the run cannot start:"
    named = [line.split(" = ")[0].strip() for line in lines[1:-1]]
    assert named == fields
    assert not (tmp_path / "data").exists() and not (tmp_path / "records").exists()


def test_a_sweep_that_cannot_rank_its_trials_is_refused_before_any_data(tmp_path):
    code, lines, heavy = run_job("sweep", "--output-dir", str(tmp_path), "sweep.metric=val/AP")
    assert code == 2 and heavy == []
    assert "sweep.metric 'val/AP' is never reported" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no data/, records/ or configs/


def test_a_finished_run_started_again_with_other_weights_is_refused(tmp_path):
    """README's "Jobs" example after the demo, with a new loss weight: the old results would
    have been reported as the new run's."""
    check_resume(load_config("demo"), tmp_path)
    (tmp_path / "models" / "demo").mkdir(parents=True)  # what a trained demo leaves
    code, lines, heavy = run_job("distill", "--output-dir", str(tmp_path), "loss.w_gt=0.9",
                                 "optim.lr=0.01", "optim.epochs=8")
    assert code == 2 and heavy == []
    assert lines[0] == (f"distill.py: error: the run 'demo' in {tmp_path} was started with "
                        "other settings, and resuming it would continue (or, finished, only "
                        "re-report) what those trained:")
    assert [line.strip() for line in lines[1:3]] == ["loss.w_gt: 0.45 -> 0.9",
                                                      "optim.lr: 0.002 -> 0.01"]
    assert "--resume-anyway" in lines[-1]
    record = json.loads((tmp_path / "configs" / "demo.json").read_text())
    assert record["loss.w_gt"] == 0.45 and record["optim.epochs"] == 6


def test_annotation_files_swapped_between_the_datasets_are_named_with_what_they_look_like(
        real_samples, tmp_path):
    coco, mpii = real_samples / "coco", real_samples / "mpii"
    swapped = ["data.coco_val.ann_file=" + str(mpii / "test_mpii.json"),
               f"data.coco_val.img_dir={coco}", f"data.coco_val.bbox_file={coco / 'test_coco.json'}",
               "data.mpii_val.ann_file=" + str(coco / "test_coco.json"), f"data.mpii_val.img_dir={mpii}",
               "data.coco_train=null", "data.mpii_train=null", "data.mpii_val.headbox_file=null"]
    code, lines, heavy = run_job("distill", "--config", "paper", "--output-dir", str(tmp_path),
                                 *swapped, "student.backbone_checkpoint=null", "teachers=[]",
                                 cwd=tmp_path)
    assert code == 2 and heavy == []
    problems = [line.strip() for line in lines[1:-1]]
    assert problems[0].startswith(f"data.coco_val.ann_file = {mpii / 'test_mpii.json'} looks "
                                  "like an MPII annotation list")
    assert problems[1].startswith(f"data.coco_val.bbox_file = {coco / 'test_coco.json'} looks "
                                  "like a COCO annotation file")
    assert problems[2].startswith(f"data.mpii_val.ann_file = {coco / 'test_coco.json'} looks "
                                  "like a COCO annotation file")
    assert len(problems) == 3
