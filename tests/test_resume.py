"""A run started again with other settings is refused, naming them (``unipose_ray.config.resume``)."""

from __future__ import annotations

import json
import shutil

import pytest

from unipose_ray.config import load_config
from unipose_ray.config.resume import ResumeMismatch, check_resume, record_path


@pytest.fixture
def trained(tmp_path):
    """An output folder where the demo run was started and trained (its model folder)."""
    check_resume(load_config("demo"), tmp_path)
    (tmp_path / "models" / "demo").mkdir(parents=True)
    return tmp_path


def test_the_same_settings_resume(trained):
    assert check_resume(load_config("demo"), trained) == []


def test_other_loss_weights_or_lr_are_refused_with_both_values_and_the_ways_out(trained):
    with pytest.raises(ResumeMismatch) as refused:
        check_resume(load_config("demo", ["loss.w_gt=0.9", "optim.lr=0.01"]), trained)
    message = str(refused.value)
    assert "  loss.w_gt: 0.45 -> 0.9\n  optim.lr: 0.002 -> 0.01\n" in message
    assert "run.name=" in message and "--output-dir" in message and "--resume-anyway" in message
    started = json.loads(record_path(trained, "demo").read_text())
    assert started["loss.w_gt"] == 0.45  # the record still holds what was trained


def test_more_epochs_and_other_placement_extend_the_run_fewer_epochs_do_not(trained):
    more = ["optim.epochs=12", "run.max_failures=3", "teachers.0.replicas=2", "parallel_runs=1"]
    assert check_resume(load_config("demo", more), trained) == []
    with pytest.raises(ResumeMismatch, match=r"optim.epochs: 12 -> 6 \(a run's epochs can "
                                             r"grow, not shrink"):
        check_resume(load_config("demo"), trained)


def test_resume_anyway_goes_on_and_records_the_new_settings(trained):
    changed = load_config("demo", ["loss.w_gt=0.9"])
    assert check_resume(changed, trained, anyway=True) == ["loss.w_gt: 0.45 -> 0.9"]
    assert check_resume(changed, trained) == []


def test_a_moved_file_is_the_same_input_another_file_is_not(trained, tmp_path_factory):
    teacher = load_config("demo").teachers[0].checkpoint
    moved = tmp_path_factory.mktemp("moved") / "renamed.pth"
    shutil.copyfile(teacher, moved)
    assert check_resume(load_config("demo", [f"teachers.0.checkpoint={moved}"]), trained) == []
    other = load_config("demo").teachers[1].checkpoint
    with pytest.raises(ResumeMismatch, match=r"teachers.0.checkpoint: renamed.pth \(\d+ bytes, "
                                             r"[0-9a-f]+\) -> rtmpose-t_demo-mpii_96x96.pth"):
        check_resume(load_config("demo", [f"teachers.0.checkpoint={other}"]), trained)


def test_a_start_that_trained_nothing_may_be_retried_with_other_settings(tmp_path):
    check_resume(load_config("demo"), tmp_path)
    (tmp_path / "models" / "demo2").mkdir(parents=True)  # another run's folder, not this one's
    assert check_resume(load_config("demo", ["loss.w_gt=0.9"]), tmp_path) == []
    assert json.loads(record_path(tmp_path, "demo").read_text())["loss.w_gt"] == 0.9


def test_a_sweep_resumed_with_another_search_is_refused(tmp_path):
    check_resume(load_config("demo_sweep"), tmp_path)
    (tmp_path / "tune" / f"{load_config('demo_sweep').run.name}_sweep").mkdir(parents=True)
    with pytest.raises(ResumeMismatch, match=r"sweep.num_samples: 6 -> 9"):
        check_resume(load_config("demo_sweep", ["sweep.num_samples=9"]), tmp_path)
