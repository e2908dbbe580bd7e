"""``jobs/evaluate.py``: any MMPose-format checkpoint -> the cross-dataset table and JSON."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from unipose_ray.config.settings import CodecConfig
from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.data.records import write_records
from unipose_ray.data.synthetic import SyntheticDataset
from unipose_ray.evaluation.cross_dataset import (
    HEADLINE,
    TRANSFER_COLUMNS,
    EvalSet,
    evaluate_model,
)
from unipose_ray.models import build_from_config, build_rtmpose, write_mmpose_config
from unipose_ray.models.checkpoints import save_checkpoint
from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import COCO, UNIFIED


def _coco_config() -> str:
    import_mmpose()
    import mmpose

    return os.path.join(os.path.dirname(mmpose.__file__), ".mim/configs/body_2d_keypoint/"
                        "rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py")


@pytest.fixture(scope="module")
def job(load_job):
    return load_job("evaluate")


@pytest.fixture(scope="module")
def data(tiny_dataset) -> SyntheticDataset:
    """The suite's tiny dataset: its validation splits hold a handful of people (the random
    model runs on the CPU)."""
    return tiny_dataset


def _data_args(data: SyntheticDataset) -> list[str]:
    return ["--coco-ann", str(data.coco_val_ann), "--coco-img-dir", str(data.coco_val_images),
            "--coco-unified-ann", str(data.coco_val_unified),
            "--mpii-ann", str(data.mpii_val_ann), "--mpii-img-dir", str(data.mpii_val_images),
            "--mpii-unified-ann", str(data.mpii_val_unified)]


def _direct_metrics(model, dataset: str, data: SyntheticDataset, tmp_path: Path,
                    flip_test: bool = True) -> dict:
    """The package call the job should amount to, on record files written here."""
    coco = write_records(read_coco(data.coco_val_ann, data.coco_val_images), tmp_path / "c.parquet")
    mpii = write_records(read_mpii(data.mpii_val_ann, data.mpii_val_images), tmp_path / "m.parquet")
    eval_sets = [EvalSet("coco", str(coco), str(data.coco_val_ann), str(data.coco_val_unified)),
                 EvalSet("mpii", str(mpii), None, str(data.mpii_val_unified))]
    return evaluate_model(model, dataset, model.spec.codec, eval_sets, batch_size=8,
                          flip_test=flip_test)


def _spy_on_evaluate_model(job, monkeypatch) -> list[tuple]:
    """Record what the job hands ``evaluate_model`` (a random model's metrics are mostly 0,
    so equal values alone would not show a wrong keypoint set or codec)."""
    calls = []

    def spy(model, dataset, codec, eval_sets, **kwargs):
        calls.append((model.spec, dataset, codec, eval_sets, kwargs["flip_test"]))
        return evaluate_model(model, dataset, codec, eval_sets, **kwargs)

    monkeypatch.setattr(job, "evaluate_model", spy)
    return calls


def _assert_json_equals(path: Path, metrics: dict) -> None:
    """The file holds ``metrics`` in the table's units: COCOeval's AP/AR in %."""
    written = json.loads(path.read_text())
    assert set(HEADLINE) <= set(written)
    assert set(written) == set(metrics)
    for name, value in metrics.items():
        if math.isnan(value):
            assert written[name] is None, name
        else:
            percent = name.startswith(("coco_AP", "coco_AR", "unified_AP", "unified_AR"))
            expected = 100 * value if percent else value
            assert written[name] == pytest.approx(expected, abs=1e-9), name


def test_output_is_written_in_the_tables_units(job):
    """AP and AR as % (like PCKh and every printed table); NaN as null. A random model's AP
    is mostly 0, so the job's files alone would not show a missing factor of 100."""
    metrics = {"coco_AP": 0.5, "coco_AR_M": 0.25, "unified_AP_mpii_domain": 0.125,
               "mpii_PCKh": 80.0, "transfer_PCK": math.nan, "score": 65.0}
    assert job.as_written(metrics) == {
        "coco_AP": 50.0, "coco_AR_M": 25.0, "unified_AP_mpii_domain": 12.5, "mpii_PCKh": 80.0,
        "transfer_PCK": None, "score": 65.0}


def test_negative_workers_is_a_usage_error(job, capsys):
    with pytest.raises(SystemExit) as exit_info:
        job.parse_args(["--checkpoint", "m.pth", "--workers", "-1"])
    assert exit_info.value.code == 2
    assert "--workers -1: pass 0 (this process) or more Ray tasks" in capsys.readouterr().err


def test_unified_student_of_a_run(job, data, tmp_path, monkeypatch, capsys):
    """A run's best.pth, its model_config.py beside it (no --model-config), as predict and export
    take it; the row is named after the run's folder and the file."""
    model = build_rtmpose("t", UNIFIED.num_keypoints, input_size=(256, 256))
    write_mmpose_config(model, "t", tmp_path / "student" / "model_config.py")
    checkpoint = save_checkpoint(model, tmp_path / "student" / "best.pth")
    output = tmp_path / "out" / "table.json"
    calls = _spy_on_evaluate_model(job, monkeypatch)

    returned = job.main(["--checkpoint", str(checkpoint), *_data_args(data), "--batch-size",
                         "8", "--output", str(output)])

    [(spec, dataset, codec, eval_sets, flip_test)] = calls
    assert spec == model.spec and dataset == UNIFIED  # the joints its model_config.py names
    assert flip_test  # the config's test_cfg, as RTMPose's
    assert codec == CodecConfig((256, 256), (5.66, 5.66), 2.0)
    assert [(s.name, s.ann_file, s.unified_ann_file) for s in eval_sets] == [
        ("coco", str(data.coco_val_ann), str(data.coco_val_unified)),
        ("mpii", str(data.mpii_val_ann), str(data.mpii_val_unified))]
    expected = _direct_metrics(model, "unified", data, tmp_path)
    _assert_json_equals(output, expected)
    assert returned.keys() == expected.keys()
    assert {"unified_AP_coco_domain", "unified_AP_mpii_domain", "mpii_PCKh/head_top"} <= set(expected)
    out = capsys.readouterr().out
    assert "(model_config.py): unified keypoints (21)" in out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("model "))
    header, row = lines[at:at + 2]
    assert header.split() == ["model", *TRANSFER_COLUMNS]  # the demo's table
    assert row.split()[0] == "student/best.pth" and len(row.split()) == 1 + len(TRANSFER_COLUMNS)


def test_coco_teacher_from_the_released_config(job, data, tmp_path, monkeypatch, capsys):
    """A 17-keypoint model is evaluated as a COCO model (missing joints count as misses)."""
    config = _coco_config()
    model = build_from_config(config)
    checkpoint = save_checkpoint(model, tmp_path / "coco_t.pth")
    output = tmp_path / "coco_t.json"
    calls = _spy_on_evaluate_model(job, monkeypatch)

    job.main(["--model-config", config, "--checkpoint", str(checkpoint), *_data_args(data),
              "--output", str(output)])

    [(spec, dataset, codec, _, _)] = calls
    assert spec.num_keypoints == 17 and dataset == COCO
    assert codec == CodecConfig((192, 256), (4.9, 5.66), 2.0)
    assert "coco keypoints (17)" in capsys.readouterr().out
    _assert_json_equals(output, _direct_metrics(model, "coco", data, tmp_path))


def test_missing_annotation_file_is_named_before_the_model_is_built(job, data, tmp_path,
                                                                    monkeypatch, capsys):
    def must_not_build(*args, **kwargs):
        raise AssertionError("the model was built before the inputs were checked")

    monkeypatch.setattr(job, "build_from_config", must_not_build)
    model = build_rtmpose("t", UNIFIED.num_keypoints)
    config = write_mmpose_config(model, "t", tmp_path / "m.py")
    checkpoint = save_checkpoint(model, tmp_path / "m.pth")
    missing = tmp_path / "nowhere" / "person_keypoints_val.json"

    with pytest.raises(SystemExit) as exit_info:
        job.main(["--model-config", str(config), "--checkpoint", str(checkpoint),
                  "--coco-ann", str(missing), "--coco-img-dir", str(data.coco_val_images)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"evaluate.py: error: --coco-ann {missing} does not exist\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "at least one validation set"),
        (["--coco-ann", "{coco_ann}"], "--coco-ann and --coco-img-dir go together"),
        (["--mpii-ann", "{mpii_ann}", "--mpii-img-dir", "{mpii_dir}",
          "--mpii-headbox-file", "{missing}"], "--mpii-headbox-file"),
    ],
)
def test_bad_dataset_arguments_fail_before_the_model(job, data, tmp_path, monkeypatch, capsys,
                                                     args, message):
    monkeypatch.setattr(job, "build_from_config", lambda *a, **k: pytest.fail("model built"))
    config, checkpoint = tmp_path / "m.py", tmp_path / "m.pth"
    config.write_text("")
    checkpoint.write_bytes(b"")
    values = {"coco_ann": data.coco_val_ann, "mpii_ann": data.mpii_val_ann,
              "mpii_dir": data.mpii_val_images, "missing": tmp_path / "mpii_gt_val.mat"}
    argv = ["--model-config", str(config), "--checkpoint", str(checkpoint),
            *(a.format(**values) for a in args)]
    with pytest.raises(SystemExit):
        job.main(argv)
    assert message in capsys.readouterr().err


def test_missing_checkpoint_is_named(job, data, tmp_path, capsys):
    missing = tmp_path / "best.pth"
    with pytest.raises(SystemExit):
        job.main(["--model-config", _coco_config(), "--checkpoint", str(missing),
                  "--coco-ann", str(data.coco_val_ann), "--coco-img-dir",
                  str(data.coco_val_images)])
    assert str(missing) in capsys.readouterr().err


def _usage_error(job, argv, capsys) -> str:
    """The one-line message of a user's mistake: exit code 2, on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        job.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_a_checkpoint_without_config_says_what_to_pass(job, data, tmp_path, monkeypatch,
                                                      capsys):
    monkeypatch.setattr(job, "build_from_config", lambda *a, **k: pytest.fail("model built"))
    checkpoint = save_checkpoint(build_rtmpose("t", UNIFIED.num_keypoints), tmp_path / "m.pth")
    err = _usage_error(job, ["--checkpoint", str(checkpoint), "--coco-ann",
                             str(data.coco_val_ann), "--coco-img-dir",
                             str(data.coco_val_images)], capsys)
    assert err.startswith(f"evaluate.py: error: model config {tmp_path / 'model_config.py'} "
                          "does not exist")
    assert "pass the model's MMPose config with --model-config" in err


def test_cuda_without_a_gpu_is_refused_before_the_model(job, data, tmp_path, monkeypatch,
                                                       capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(job, "build_from_config", lambda *a, **k: pytest.fail("model built"))
    model = build_rtmpose("t", UNIFIED.num_keypoints)
    write_mmpose_config(model, "t", tmp_path / "model_config.py")
    checkpoint = save_checkpoint(model, tmp_path / "best.pth")
    err = _usage_error(job, ["--checkpoint", str(checkpoint), "--device", "cuda",
                             "--coco-ann", str(data.coco_val_ann), "--coco-img-dir",
                             str(data.coco_val_images)], capsys)
    assert err == ("evaluate.py: error: --device cuda: PyTorch sees no CUDA GPU on this "
                   "machine (torch.cuda.is_available() is False); pass --device cpu\n")


def test_the_row_is_named_after_the_checkpoint(job):
    assert job.row_name(Path("outputs/demo/models/demo/best.pth")) == "demo/best.pth"
    assert job.row_name(Path("rtmpose-m_coco.pth")) == "rtmpose-m_coco.pth"
