"""A file that is not a checkpoint, or one only a trusted load reads: one message that names
the file and, only where it applies, the trust option as the user sets it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unipose_ray.cli import UsageError
from unipose_ray.models import build_rtmpose, build_teacher, write_mmpose_config
from unipose_ray.models.checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from unipose_ray.skeleton import UNIFIED

REPO = Path(__file__).resolve().parents[1]


class NotAWeight:
    """A pickled object outside the safe loader's allow-list."""

    def __init__(self, value: int) -> None:
        self.value = value


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run's folder: model_config.py and a good best.pth of a small student."""
    folder = tmp_path_factory.mktemp("run")
    model = build_rtmpose("t", UNIFIED.num_keypoints, (64, 96), sigma=(1.63, 2.12))
    write_mmpose_config(model, "t", folder / "model_config.py")
    save_checkpoint(model, folder / "best.pth")
    return folder


def _beside(run_dir: Path, folder: Path, name: str, content: bytes) -> Path:
    """``content`` as ``folder/name`` with the run's model_config.py beside it."""
    folder.mkdir(exist_ok=True)
    (folder / "model_config.py").write_bytes((run_dir / "model_config.py").read_bytes())
    path = folder / name
    path.write_bytes(content)
    return path


def _random_bytes(run_dir: Path, folder: Path) -> Path:
    return _beside(run_dir, folder, "random.pth", os.urandom(4096))


def _truncated(run_dir: Path, folder: Path) -> Path:
    whole = (run_dir / "best.pth").read_bytes()
    return _beside(run_dir, folder, "truncated.pth", whole[: len(whole) // 2])


def _with_custom_object(run_dir: Path, folder: Path) -> Path:
    checkpoint = torch.load(run_dir / "best.pth", weights_only=True)
    checkpoint["meta"]["note"] = NotAWeight(1)
    path = _beside(run_dir, folder, "custom.pth", b"")
    torch.save(checkpoint, path)
    return path


# --- read_checkpoint -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (_random_bytes, "neither the zip archive torch.save writes nor its pre-1.6 format"),
        (_truncated, "a zip archive whose end is missing or damaged: a truncated copy"),
        (lambda run_dir, folder: _beside(run_dir, folder, "empty.pth", b""), "the file is empty"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_says_so(run_dir, tmp_path, make, problem):
    path = make(run_dir, tmp_path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"{path} is not a PyTorch checkpoint ({problem}")
    assert "trust" not in message  # trusting the file would not help
    assert isinstance(error.value, UsageError)


def test_the_trust_option_is_offered_under_the_callers_name(run_dir, tmp_path):
    path = _with_custom_object(run_dir, tmp_path)
    with pytest.raises(CheckpointError, match=r"NotAWeight\. Unpickling them can run arbitrary "
                                              r"code.* load it with trust_checkpoint=True$"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"load it with teachers\.1\.trust_checkpoint=true$"):
        build_teacher(run_dir / "model_config.py", path,
                      trust_hint="teachers.1.trust_checkpoint=true")
    assert isinstance(read_checkpoint(path, trust_checkpoint=True)["meta"]["note"], NotAWeight)


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"checkpoint {tmp_path / 'gone.pth'} does not"):
        read_checkpoint(tmp_path / "gone.pth")


# --- Through the jobs: exit code 2, one message, no traceback ------------------------------


def _job_error(load_job, name: str, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        load_job(name).main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def _predict_args(checkpoint: Path, real_samples: Path, tmp_path: Path) -> list[str]:
    return ["--checkpoint", str(checkpoint), str(real_samples / "coco"),
            "--out", str(tmp_path / "out"), "--device", "cpu"]


def _evaluate_args(checkpoint: Path, real_samples: Path) -> list[str]:
    coco = real_samples / "coco"
    return ["--checkpoint", str(checkpoint), "--coco-ann", str(coco / "test_coco.json"),
            "--coco-img-dir", str(coco), "--device", "cpu"]


@pytest.mark.parametrize("job", ["predict", "evaluate"])
@pytest.mark.parametrize("make", [_random_bytes, _truncated])
def test_jobs_refuse_a_file_that_is_not_a_checkpoint(load_job, run_dir, real_samples, tmp_path,
                                                     capsys, job, make):
    path = make(run_dir, tmp_path / "given")
    argv = (_predict_args(path, real_samples, tmp_path) if job == "predict"
            else _evaluate_args(path, real_samples))
    err = _job_error(load_job, job, argv, capsys)
    assert err.startswith(f"{job}.py: error: {path} is not a PyTorch checkpoint (")
    assert "trust" not in err and "Traceback" not in err


@pytest.mark.parametrize("job", ["predict", "evaluate"])
def test_jobs_offer_their_trust_flag_for_a_custom_object(load_job, run_dir, real_samples,
                                                        tmp_path, capsys, job):
    path = _with_custom_object(run_dir, tmp_path / "given")
    argv = (_predict_args(path, real_samples, tmp_path) if job == "predict"
            else _evaluate_args(path, real_samples))
    err = _job_error(load_job, job, argv, capsys)
    assert err.startswith(f"{job}.py: error: {path} holds pickled Python objects")
    assert "NotAWeight" in err and err.endswith("load it with --trust-checkpoint\n")
    assert "trust_checkpoint=True" not in err


def test_a_job_run_as_a_script_prints_one_line(run_dir, real_samples, tmp_path):
    """What a user sees in the terminal: no traceback, exit code 2."""
    path = _random_bytes(run_dir, tmp_path / "given")
    done = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "predict.py"),
         *_predict_args(path, real_samples, tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=240, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1:] == [
        f"predict.py: error: {path} is not a PyTorch checkpoint (neither the zip archive "
        "torch.save writes nor its pre-1.6 format: another kind of file?); pass the .pth file "
        "that torch.save, MMPose or a run of this project wrote"]
