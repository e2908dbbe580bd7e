"""ONNX export: onnxruntime against PyTorch on real crops, the mmdeploy convention (checked
against MMPose's own preprocessor), metadata, ``load_pose_model``, and the two jobs."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset
from unipose_ray.data.readers import read_coco
from unipose_ray.data.transforms import AugmentConfig
from unipose_ray.deploy.onnx import (
    OnnxPoseModel,
    export_metadata,
    export_onnx,
    keypoint_names_of,
    load_pose_model,
    write_model_atomically,
)
from unipose_ray.deploy.onnx_check import ExportCheck, coco_file_in, generated_crops, person_crops
from unipose_ray.evaluation.decode import decode_simcc
from unipose_ray.models import PoseModel, build_from_config, build_rtmpose, write_mmpose_config
from unipose_ray.models.checkpoints import save_checkpoint
from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import COCO, UNIFIED

ATOL = 1e-4


def _released_coco_config() -> str:
    import_mmpose()
    import mmpose

    return os.path.join(os.path.dirname(mmpose.__file__), ".mim/configs/body_2d_keypoint/"
                        "rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py")


def _trained_like(model: PoseModel, seed: int) -> PoseModel:
    """Weights whose logits have a trained model's scale and depend on the image.

    A freshly initialised RTMPose's logits are ~1e-6, where any export matches to 1e-4;
    PyTorch's default init alone gives logits that no longer depend on the input (the
    signal fades layer by layer). So: PyTorch's init, BatchNorm scales in [0.8, 1.2) and
    statistics measured on random images (activations normalised layer by layer, as in a
    trained network), and the SimCC layers scaled to logits of a few units (a trained
    RTMPose's are ~1). Larger logits carry proportionally larger float32 rounding: at
    ~15, PyTorch float32 itself is 2e-4 off its float64 result, as onnxruntime is.
    """
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    w, h = model.spec.input_size
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.reset_parameters()
        for norm in norms:
            norm.weight.copy_(torch.rand(norm.num_features, generator=generator) * 0.4 + 0.8)
            norm.bias.copy_(torch.randn(norm.num_features, generator=generator) * 0.1)
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the calibration batch
        model.train()(torch.randint(0, 256, (8, 3, h, w), generator=generator))
        model.eval()
        for norm in norms:
            norm.momentum = 0.1
        model.estimator.head.cls_x.weight.mul_(0.25)
        model.estimator.head.cls_y.weight.mul_(0.25)
    return model


@dataclass
class Exported:
    """A saved model (checkpoint + config), the PyTorch model loaded from them, its export."""

    checkpoint: Path
    config: Path
    model: PoseModel
    onnx: Path
    training_after_export: bool = False
    job_check: ExportCheck | None = None  # when jobs/export.py wrote it
    job_stdout: str = ""


@pytest.fixture(scope="module")
def unified(tmp_path_factory) -> Exported:
    """A 21-joint student as a run of this project leaves it (model_config.py beside)."""
    folder = tmp_path_factory.mktemp("unified_run")
    model = _trained_like(build_rtmpose("t", UNIFIED.num_keypoints, (192, 256)), seed=1)
    checkpoint = save_checkpoint(model, folder / "best.pth", dataset_meta=UNIFIED.dataset_meta())
    config = write_mmpose_config(model, "t", folder / "model_config.py")
    loaded = load_pose_model(checkpoint)
    loaded.train()  # exported in eval mode all the same, and left as it was
    path = export_onnx(loaded, folder / "model.onnx")
    return Exported(checkpoint, config, loaded, path, loaded.training)


@pytest.fixture(scope="module")
def export_job(load_job):
    return load_job("export")


@pytest.fixture(scope="module")
def coco(tmp_path_factory, export_job) -> Exported:
    """A 17-joint model of MMPose's released RTMPose-t COCO config whose network takes BGR
    (the config, otherwise the released one, does not flip cv2's BGR to RGB), exported by
    ``jobs/export.py`` with ``--model-config``, checked on random images."""
    folder = tmp_path_factory.mktemp("coco_model")
    released = Path(_released_coco_config())
    model = _trained_like(build_from_config(released), seed=2)
    checkpoint = save_checkpoint(model, folder / "coco_t.pth")
    config = folder / "rtmpose-t_coco_bgr.py"
    config.write_text(f"_base_ = [{str(released)!r}]\n"
                      "model = dict(data_preprocessor=dict(bgr_to_rgb=False))\n")
    path = folder / "coco_t.onnx"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        check = export_job.main(["--checkpoint", str(checkpoint), "--model-config", str(config),
                                 "--out", str(path), "--check-images", "none",
                                 "--max-crops", "3"])
    loaded = load_pose_model(checkpoint, config)
    assert loaded.rgb_to_bgr
    return Exported(checkpoint, config, loaded, path, job_check=check,
                    job_stdout=stdout.getvalue())


@pytest.fixture(scope="module")
def crops(real_samples) -> torch.Tensor:
    """``(N, 3, 256, 192)`` uint8 RGB person crops of the real COCO samples, cut by the
    project's validation pipeline."""
    records = read_coco(real_samples / "coco" / "test_coco.json", real_samples / "coco")
    dataset = TopdownDataset(records, PipelineConfig(augment=AugmentConfig.none()))
    assert dataset.config.codec.input_size == (192, 256)
    return torch.from_numpy(np.stack([dataset.sample(i).image for i in range(len(dataset))]))


def _pytorch(model: PoseModel, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return model(images)


def _assert_same_predictions(outputs, reference, split_ratio: float) -> None:
    """Logits within ``ATOL``; decoded keypoints equal except at float32 ties.

    With logits within ``d``, a keypoint can only move where PyTorch's two best bins are
    within ``2 d`` (PyTorch float32 and float64 split such ties too). With random weights
    over these crops (whose cut is still being refined) that happens for about one in a
    thousand keypoints, so: at most two moved keypoints, each at such a tie.
    """
    for out, ref in zip(outputs, reference, strict=True):
        assert out.dtype == torch.float32 and out.shape == ref.shape
        torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    moved = np.argwhere(np.any(decode_simcc(*outputs, split_ratio)[0]
                               != decode_simcc(*reference, split_ratio)[0], axis=-1))
    assert len(moved) <= 2, f"{len(moved)} keypoints decode differently: {moved.tolist()}"
    for b, k in moved:
        for out, ref in zip(outputs, reference, strict=True):
            best, chosen = int(ref[b, k].argmax()), int(out[b, k].argmax())
            assert float(ref[b, k, best] - ref[b, k, chosen]) <= 2 * ATOL


# --- The file ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["unified", "coco"])
def test_onnxruntime_matches_pytorch_on_real_crops(which, request, crops):
    exported: Exported = request.getfixturevalue(which)
    reference = _pytorch(exported.model, crops)
    # 1e-4 is a real bound here, and every crop decodes differently (a wrong input shows).
    assert min(float(r.abs().max()) for r in reference) > 1.0
    keypoints = decode_simcc(*reference)[0].reshape(len(crops), -1)
    assert len(np.unique(keypoints, axis=0)) == len(crops)

    outputs = OnnxPoseModel(exported.onnx)(crops)

    k = exported.model.spec.num_keypoints
    assert outputs[0].shape == (len(crops), k, 384) and outputs[1].shape == (len(crops), k, 512)
    _assert_same_predictions(outputs, reference, exported.model.spec.simcc_split_ratio)


def test_export_runs_in_eval_mode_and_restores_the_mode(unified):
    # The fixture exported the model in training mode; the match above needs BatchNorm's
    # running statistics, so the file was traced in eval mode, and the mode came back.
    assert unified.training_after_export is True


@pytest.mark.parametrize("which", ["unified", "coco"])
def test_the_graph_takes_mmposes_normalised_input(which, request, crops):
    """The mmdeploy convention: channel order, mean and std are applied outside the graph,
    exactly as MMPose's ``PoseDataPreprocessor`` does on cv2's BGR images."""
    from mmpose.structures import PoseDataSample

    exported: Exported = request.getfixturevalue(which)
    estimator = exported.model.estimator
    bgr = list(crops[:4].flip(1))  # as cv2 loads them
    normalised = estimator.data_preprocessor(
        dict(inputs=bgr, data_samples=[PoseDataSample() for _ in bgr]), training=False)["inputs"]
    with torch.no_grad():
        reference = estimator.head(estimator.extract_feat(normalised))

    session = ort.InferenceSession(str(exported.onnx), providers=["CPUExecutionProvider"])
    [graph_input] = session.get_inputs()
    assert graph_input.name == "input" and graph_input.type == "tensor(float)"
    assert isinstance(graph_input.shape[0], str) and graph_input.shape[1:] == [3, 256, 192]
    assert [o.name for o in session.get_outputs()] == ["simcc_x", "simcc_y"]
    outputs = session.run(None, {"input": normalised.numpy()})

    _assert_same_predictions([torch.from_numpy(o) for o in outputs], reference, 2.0)


def test_batch_sizes_one_and_three(unified, crops):
    runner = OnnxPoseModel(unified.onnx)
    for images in (crops[:1], crops[1:4]):
        outputs = runner(images)
        assert outputs[0].shape[0] == len(images)
        _assert_same_predictions(outputs, _pytorch(unified.model, images), 2.0)


@pytest.mark.parametrize(("which", "names", "channel_order"),
                         [("unified", UNIFIED.names, "rgb"), ("coco", COCO.names, "bgr")])
def test_metadata_round_trips(which, names, channel_order, request):
    exported: Exported = request.getfixturevalue(which)
    props = {p.key: p.value for p in onnx.load(str(exported.onnx)).metadata_props}
    meta = {key: json.loads(value) for key, value in props.items()}  # every value is JSON
    model = exported.model
    assert meta["input_size"] == [192, 256] and meta["num_keypoints"] == len(names)
    assert meta["simcc_split_ratio"] == 2.0 and meta["sigma"] == [4.9, 5.66]
    assert meta["channel_order"] == channel_order and meta["keypoint_names"] == list(names)
    assert meta["mean"] == pytest.approx([123.675, 116.28, 103.53])
    assert meta["std"] == pytest.approx([58.395, 57.12, 57.375])

    runner = OnnxPoseModel(exported.onnx)
    assert runner.spec == model.spec
    assert runner.keypoint_names == tuple(names)
    assert runner.rgb_to_bgr == model.rgb_to_bgr
    torch.testing.assert_close(runner.mean, model.mean)
    torch.testing.assert_close(runner.std, model.std)


def test_keypoint_names_come_from_the_checkpoint_else_the_keypoint_set():
    model = build_rtmpose("t", 17)
    assert keypoint_names_of(model) == COCO.names
    model.estimator.dataset_meta = {"keypoint_id2name": {i: f"joint{i}" for i in range(17)}}
    assert keypoint_names_of(model) == tuple(f"joint{i}" for i in range(17))
    with pytest.raises(ValueError, match="predicts 5 keypoints.*pass keypoint_names"):
        keypoint_names_of(build_rtmpose("t", 5))
    with pytest.raises(ValueError, match="3 keypoint names for a model with 17"):
        export_metadata(model, ["a", "b", "c"])


def test_a_heatmap_model_is_refused_before_exporting(tmp_path):
    model = build_rtmpose("t", 17, head="heatmap")
    with pytest.raises(ValueError, match="only SimCC pose models export"):
        export_onnx(model, tmp_path / "heatmap.onnx")
    assert not list(tmp_path.iterdir())


def test_a_failed_write_leaves_the_previous_file(unified, tmp_path, monkeypatch):
    proto = onnx.load(str(unified.onnx))
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")

    def broken_save(model, path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_model_atomically(proto, target)
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary left

    monkeypatch.undo()
    write_model_atomically(proto, target)
    assert target.read_bytes() == unified.onnx.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


# --- The runner ----------------------------------------------------------------------------


def test_the_runner_stands_in_for_a_torch_model(unified, crops):
    runner = OnnxPoseModel(unified.onnx, intra_op_threads=1)
    assert runner.training is False
    assert runner.eval() is runner and runner.train() is runner and runner.training is False
    assert runner.to("cpu") is runner and runner.to(torch.device("cpu")) is runner
    with pytest.raises(ValueError, match=re.escape(str(unified.onnx))):
        runner.to("cuda")
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 256, 192\)"):
        runner(crops[:, :, :192])

    from_uint8 = runner(crops[:2])
    for images in (crops[:2].float(), crops[:2].numpy()):
        for a, b in zip(runner(images), from_uint8, strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_a_file_that_is_not_an_export_is_refused(unified, tmp_path):
    proto = onnx.load(str(unified.onnx))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save_model(proto, str(bare))
    with pytest.raises(ValueError, match=f"{re.escape(str(bare))} is not a pose model exported"):
        OnnxPoseModel(bare)

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match=f"{re.escape(str(garbage))} cannot be loaded"):
        OnnxPoseModel(garbage)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxPoseModel(tmp_path / "missing.onnx")


def test_load_pose_model_picks_the_runner(unified, coco, crops):
    assert isinstance(load_pose_model(unified.onnx), OnnxPoseModel)
    beside = load_pose_model(unified.checkpoint)  # model_config.py found beside it
    given = load_pose_model(coco.checkpoint, coco.config)
    assert isinstance(beside, PoseModel) and isinstance(given, PoseModel)
    assert beside.spec == unified.model.spec and given.spec.num_keypoints == 17
    for a, b in zip(_pytorch(beside, crops[:2]), _pytorch(unified.model, crops[:2]), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)  # the checkpoint's weights

    with pytest.raises(ValueError, match="carries its own settings"):
        load_pose_model(unified.onnx, config=unified.config)
    with pytest.raises(ValueError, match="not supported"):
        load_pose_model(unified.onnx, device="cuda")
    with pytest.raises(FileNotFoundError, match="no model_config.py beside the checkpoint"):
        load_pose_model(coco.checkpoint)


def test_person_crops_are_the_validation_crops(real_samples, crops, unified, tmp_path):
    folder = real_samples / "coco"
    assert coco_file_in(folder).name == "test_coco.json"  # not the detection results
    torch.testing.assert_close(person_crops(folder, unified.model.spec, limit=5), crops[:5],
                               atol=0, rtol=0)
    with pytest.raises(FileNotFoundError, match="no COCO person-keypoints file"):
        coco_file_in(tmp_path)


# --- jobs/export.py ------------------------------------------------------------------------


def test_generated_crops_are_seeded_people_at_the_input_size(unified):
    spec = unified.model.spec
    crops = generated_crops(spec, limit=5)
    w, h = spec.input_size
    assert crops.shape == (5, 3, h, w) and crops.dtype == torch.uint8
    torch.testing.assert_close(crops, generated_crops(spec, limit=5), atol=0, rtol=0)
    assert len({bytes(c.numpy()) for c in crops}) == 5  # five different people
    assert all(float(c.float().std()) > 10 for c in crops)  # drawn figures, not flat padding


def test_export_job_with_the_config_beside_the_checkpoint(export_job, unified, tmp_path,
                                                         monkeypatch, capsys):
    """The default check images are generated: the job reads no folder of its own."""
    monkeypatch.setattr(export_job, "person_crops", lambda *a, **k: pytest.fail("read a folder"))
    out = tmp_path / "deploy" / "student.onnx"  # the folder is created

    check = export_job.main(["--checkpoint", str(unified.checkpoint), "--out", str(out),
                             "--max-crops", "4"])

    stdout = capsys.readouterr().out
    assert "4 person crops of generated images" in stdout
    assert "max |logit diff| onnxruntime vs PyTorch" in stdout
    assert "decoded keypoints equal: yes" in stdout and "check OK" in stdout
    assert check.num_images == 4 and check.num_keypoints == 4 * 21 and check.keypoints_equal
    assert check.max_abs_diff <= ATOL and check.max_abs_logit > 1.0
    assert 0 < check.float32_error < ATOL  # float64 PyTorch: float32's own rounding
    runner = OnnxPoseModel(out)
    assert runner.spec == unified.model.spec and runner.keypoint_names == UNIFIED.names


def test_export_job_with_a_config_and_random_images(coco):
    """The ``coco`` fixture's run: its check only passes if the runner flips the RGB images
    to BGR as the PyTorch model does."""
    assert "3 random images (--check-images none)" in coco.job_stdout
    assert "decoded keypoints equal: yes" in coco.job_stdout and "check OK" in coco.job_stdout
    check = coco.job_check
    assert check.num_images == 3 and check.num_keypoints == 3 * 17 and check.passed()
    assert check.max_abs_logit > 1.0
    runner = OnnxPoseModel(coco.onnx)
    assert runner.rgb_to_bgr and runner.keypoint_names == COCO.names


def test_export_job_fails_when_the_file_does_not_reproduce_the_model(export_job, unified,
                                                                     tmp_path, monkeypatch,
                                                                     capsys):
    other = build_rtmpose("t", UNIFIED.num_keypoints, (192, 256))  # logits ~1e-6, not ~3
    checkpoint = save_checkpoint(other, tmp_path / "other.pth")
    write_mmpose_config(other, "t", tmp_path / "model_config.py")
    # The export step writes another model's file (the unified fixture's export).
    monkeypatch.setattr(export_job, "export_onnx",
                        lambda model, path: shutil.copyfile(unified.onnx, path))
    out = tmp_path / "wrong.onnx"

    with pytest.raises(SystemExit) as exit_info:
        export_job.main(["--checkpoint", str(checkpoint), "--out", str(out), "--max-crops", "2"])

    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "check FAILED" in captured.out
    assert f"removed {out}" in captured.err and not out.exists()


def test_export_job_checks_on_the_person_crops_of_a_folder(export_job, unified, real_samples,
                                                           crops, tmp_path, monkeypatch, capsys):
    folder = real_samples / "coco"
    monkeypatch.setattr(export_job, "export_onnx",  # the fixture's export: no second export
                        lambda model, path: shutil.copyfile(unified.onnx, path))
    checked = []

    def compare(model, exported, images):
        checked.append(images)
        return ExportCheck(len(images), 0.0, 1.0, 0.0, 0, 21 * len(images))

    monkeypatch.setattr(export_job, "compare_with_pytorch", compare)

    export_job.main(["--checkpoint", str(unified.checkpoint), "--out", str(tmp_path / "m.onnx"),
                     "--check-images", str(folder), "--max-crops", "4"])

    assert f"4 person crops from {folder}" in capsys.readouterr().out
    torch.testing.assert_close(checked[0], crops[:4], atol=0, rtol=0)


def _must_not_build(*args, **kwargs):
    raise AssertionError("the model was built before the inputs were checked")


def test_missing_checkpoint_is_named(export_job, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export_job, "build_from_config", _must_not_build)
    missing = tmp_path / "best.pth"
    with pytest.raises(SystemExit) as exit_info:
        export_job.main(["--checkpoint", str(missing), "--out", str(tmp_path / "m.onnx")])
    assert exit_info.value.code == 2
    assert f"checkpoint {missing} does not exist" in capsys.readouterr().err


def test_checkpoint_of_another_keypoint_count_is_named(export_job, coco, unified, tmp_path,
                                                       capsys):
    out = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as exit_info:
        export_job.main(["--checkpoint", str(coco.checkpoint), "--model-config", str(unified.config),
                         "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and str(coco.checkpoint) in err
    assert re.search(r"head\.\S+: checkpoint \(17, .*\), model expects \(21, ", err)
    assert not out.exists()


def test_output_folder_that_cannot_be_created(export_job, unified, tmp_path, monkeypatch,
                                              capsys):
    monkeypatch.setattr(export_job, "build_from_config", _must_not_build)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "sub" / "m.onnx"
    with pytest.raises(SystemExit) as exit_info:
        export_job.main(["--checkpoint", str(unified.checkpoint), "--out", str(out)])
    assert exit_info.value.code == 2
    assert f"cannot create the folder of --out {out}" in capsys.readouterr().err


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_check_images_folder_errors(export_job, unified, tmp_path, monkeypatch, capsys, folder):
    monkeypatch.setattr(export_job, "build_from_config", _must_not_build)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        export_job.main(["--checkpoint", str(unified.checkpoint), "--out",
                         str(tmp_path / "m.onnx"), "--check-images", str(tmp_path / folder)])
    err = capsys.readouterr().err
    assert str(tmp_path / folder) in err
    assert ("is not a folder" if folder == "missing" else "no COCO person-keypoints file") in err


# --- jobs/benchmark_export.py --------------------------------------------------------------


def test_benchmark_prints_both_runtimes(load_job, capsys):
    job = load_job("benchmark_export")
    results = job.main(["--size", "t", "--input-size", "64", "64", "--keypoints", "5",
                        "--threads", "1", "--batch-size", "2", "--repeats", "2",
                        "--warmup", "1"])

    assert set(results) == {1, 2}
    for timings in results.values():
        assert set(timings) == {"pytorch", "onnxruntime"} and min(timings.values()) > 0
    lines = capsys.readouterr().out.splitlines()
    for batch in (1, 2):
        for runtime in ("pytorch", "onnxruntime"):
            assert any(re.fullmatch(rf"\s*{batch}\s+{runtime}\s+[\d.]+\s+[\d.]+", line)
                       for line in lines), (batch, runtime, lines)
        assert any(re.fullmatch(rf"\s*{batch}\s+pytorch / onnxruntime: [\d.]+x", line)
                   for line in lines)
