"""``jobs/predict.py``: keypoints of the people in image files, by the evaluation's path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from unipose_ray.deploy.onnx import export_onnx
from unipose_ray.deploy.predict import image_infos
from unipose_ray.evaluation.coco_metric import bbox_keypoint_score
from unipose_ray.evaluation.topdown import predict, read_detections
from unipose_ray.models import (
    PoseModelSpec,
    build_from_config,
    build_rtmpose,
    write_mmpose_config,
)
from unipose_ray.models.checkpoints import save_checkpoint
from unipose_ray.skeleton import COCO, MPII, UNIFIED


def _save_run(model, folder: Path, meta) -> Path:
    """A checkpoint as a run of this project leaves it: best.pth + model_config.py."""
    write_mmpose_config(model, "t", folder / "model_config.py", meta)
    return save_checkpoint(model, folder / "best.pth", dataset_meta=meta)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    model = build_rtmpose("t", UNIFIED.num_keypoints, (64, 96), sigma=(1.63, 2.12))
    return _save_run(model, tmp_path_factory.mktemp("student"), UNIFIED.dataset_meta())


@pytest.fixture(scope="module")
def job(load_job):
    return load_job("predict")


def test_student_with_detector_boxes_matches_the_evaluation_path(job, student, real_samples,
                                                                 tmp_path):
    coco = real_samples / "coco"
    bbox_file = coco / "test_coco_det_AP_H_56.json"
    out = tmp_path / "out"
    results = job.main(["--checkpoint", str(student), str(coco), "--bbox-file", str(bbox_file),
                        "--out", str(out), "--draw-thr", "0"])

    assert json.loads((out / "predictions.json").read_text()) == results
    model = build_from_config(student.parent / "model_config.py", student)
    images = image_infos(sorted(coco.glob("*.jpg")))
    boxes = read_detections(bbox_file, images)
    expected = predict(model, boxes.records, "unified", model.spec.codec, flip_test=True)
    assert len(results) == len(boxes.records) == 118
    for i, result in enumerate(results):
        assert result["image_id"] == int(Path(result["file_name"]).stem)  # COCO ids from names
        kpts = np.reshape(result["keypoints"], (UNIFIED.num_keypoints, 3))
        np.testing.assert_allclose(kpts[:, :2], expected.keypoints[i], atol=1e-3)
        np.testing.assert_allclose(kpts[:, 2], expected.scores[i], atol=1e-3)
        assert result["image_id"] == boxes.records[i].image_id
        assert result["bbox"] == pytest.approx(boxes.records[i].bbox.tolist(), abs=1e-3)
        assert result["score"] == pytest.approx(
            bbox_keypoint_score(expected.scores[i], float(boxes.scores[i])), abs=1e-6)
    meta = json.loads((out / "keypoints.json").read_text())
    assert meta["keypoint_names"] == list(UNIFIED.names) and meta["flip_test"] is True

    for path in coco.glob("*.jpg"):  # one overlay per image, the image with skeletons on it
        overlay, original = cv2.imread(str(out / f"{path.stem}.png")), cv2.imread(str(path))
        assert overlay.shape == original.shape
        assert (np.abs(overlay.astype(int) - original).max(axis=2) > 40).mean() > 1e-3


def test_mpii_model_on_whole_images_with_its_config(job, real_samples, tmp_path, capsys):
    model = build_rtmpose("t", MPII.num_keypoints, (64, 64), sigma=(1.42, 1.42))
    checkpoint = save_checkpoint(model, tmp_path / "weights" / "mpii.pth")
    config = write_mmpose_config(model, "t", tmp_path / "configs" / "mpii.py")
    out = tmp_path / "out"
    images = sorted((real_samples / "mpii").glob("*.jpg"))

    results = job.main(["--checkpoint", str(checkpoint), "--model-config", str(config),
                        *map(str, images[:3]), "--out", str(out), "--no-flip-test"])

    assert len(results) == 3
    for result, path in zip(results, images):
        height, width = cv2.imread(str(path)).shape[:2]
        assert result["bbox"] == [0, 0, width, height] and result["file_name"] == path.name
        assert len(result["keypoints"]) == 3 * MPII.num_keypoints
    assert json.loads((out / "keypoints.json").read_text())["flip_test"] is False
    assert "3 people in 3 images" in capsys.readouterr().out


def test_onnx_export_predicts_what_the_checkpoint_does(job, real_samples, tmp_path):
    model = build_rtmpose("t", COCO.num_keypoints, (64, 96), sigma=(1.63, 2.12))
    checkpoint = _save_run(model, tmp_path / "run", COCO.dataset_meta())
    onnx_file = export_onnx(model, tmp_path / "model.onnx", COCO.names)
    images = str(real_samples / "coco")

    torch_results = job.main(["--checkpoint", str(checkpoint), images, "--out", str(tmp_path / "a")])
    onnx_results = job.main(["--checkpoint", str(onnx_file), images, "--out", str(tmp_path / "b")])

    assert len(onnx_results) == len(torch_results) == 4
    a = np.array([r["keypoints"] for r in torch_results]).reshape(-1, 3)
    b = np.array([r["keypoints"] for r in onnx_results]).reshape(-1, 3)
    same = np.abs(a[:, :2] - b[:, :2]).max(axis=1) <= 1e-2
    # A random model's logits are ~1e-6 and nearly flat: a few near-ties may go either way.
    assert same.mean() > 0.9
    np.testing.assert_allclose(a[:, 2], b[:, 2], atol=1e-4)


def _error(job, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        job.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_an_unreadable_image_is_named(job, student, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "broken.jpg").write_text("not an image")
    err = _error(job, ["--checkpoint", str(student), str(folder), "--out", str(tmp_path / "o")],
                 capsys)
    assert "cannot read image" in err and "broken.jpg" in err


def test_a_box_file_of_other_images_is_refused(job, student, real_samples, tmp_path, capsys):
    err = _error(job, ["--checkpoint", str(student), str(real_samples / "mpii"), "--bbox-file",
                       str(real_samples / "coco" / "test_coco_det_AP_H_56.json"),
                       "--out", str(tmp_path / "o")], capsys)
    assert "image id" in err and "not among the 5 given images" in err


def test_boxes_from_a_file_need_coco_image_ids_in_the_names(job, student, real_samples,
                                                            tmp_path, capsys):
    """Positional ids would silently give a box file's boxes to the wrong images."""
    folder = tmp_path / "renamed"
    folder.mkdir()
    for path in (real_samples / "coco").glob("*.jpg"):
        (folder / f"photo_{path.name}").write_bytes(path.read_bytes())
    err = _error(job, ["--checkpoint", str(student), str(folder), "--bbox-file",
                       str(real_samples / "coco" / "test_coco_det_AP_H_56.json"),
                       "--out", str(tmp_path / "o")], capsys)
    assert "numeric file names" in err and "photo_" in err


def test_gt_boxes_from_an_annotation_file(job, student, real_samples, tmp_path):
    coco = real_samples / "coco"
    ann = json.loads((coco / "test_coco.json").read_text())
    results = job.main(["--checkpoint", str(student), str(coco), "--gt-boxes",
                        str(coco / "test_coco.json"), "--out", str(tmp_path / "o")])
    people = [a for a in ann["annotations"] if a["num_keypoints"] > 0]
    assert [r["bbox"] for r in results] == [pytest.approx(a["bbox"], abs=1e-3) for a in people]
    assert [r["image_id"] for r in results] == [a["image_id"] for a in people]


def test_a_checkpoint_that_does_not_fit_its_config_is_refused(job, student, real_samples,
                                                              tmp_path, capsys):
    other = save_checkpoint(build_rtmpose("t", COCO.num_keypoints, (64, 96), sigma=(1.63, 2.12)),
                            tmp_path / "coco17.pth")
    err = _error(job, ["--checkpoint", str(other), "--model-config",
                       str(student.parent / "model_config.py"), str(real_samples / "coco"),
                       "--out", str(tmp_path / "o")], capsys)
    assert "does not fit" in err and "shape mismatches" in err


def test_a_missing_config_says_what_to_pass(job, tmp_path, real_samples, capsys):
    checkpoint = save_checkpoint(build_rtmpose("t", COCO.num_keypoints, (64, 96),
                                               sigma=(1.63, 2.12)), tmp_path / "alone.pth")
    err = _error(job, ["--checkpoint", str(checkpoint), str(real_samples / "coco"),
                       "--out", str(tmp_path / "o")], capsys)
    assert "model_config.py" in err and "--model-config" in err


# --- The summary: what was drawn, which images got no box -----------------------------------


class ScoredModel:
    """Stands in for a pose model with known joint scores: a peak of height
    ``u_k * a_b`` in both logits, ``u_k`` spread over the joints and ``a_b`` following the
    crop's mean pixel, so a drawing threshold splits both people and joints."""

    training = False

    def __init__(self) -> None:
        self.spec = PoseModelSpec(UNIFIED.num_keypoints, (64, 96), 2.0, (1.63, 2.12),
                                  flip_test=False)

    def eval(self) -> ScoredModel:
        return self

    def train(self, mode: bool = True) -> ScoredModel:
        return self

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (w, h), k = self.spec.input_size, self.spec.num_keypoints
        person = (images.float().mean(dim=(1, 2, 3)) / 255 * 7) % 1
        scores = person[:, None] * ((torch.arange(k) * 0.37) % 1 * 0.8 + 0.2)
        simcc_x, simcc_y = torch.zeros(len(images), k, 2 * w), torch.zeros(len(images), k, 2 * h)
        simcc_x[..., w], simcc_y[..., h] = scores, scores
        return simcc_x, simcc_y


def test_the_summary_counts_what_is_drawn(job, real_samples, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(job, "load_pose_model", lambda *a, **k: ScoredModel())
    coco = real_samples / "coco"
    thr = 0.25
    results = job.main(["--checkpoint", str(tmp_path / "model.pth"), str(coco), "--gt-boxes",
                        str(coco / "test_coco.json"), "--out", str(tmp_path / "o"),
                        "--draw-thr", str(thr)])

    drawn = [r for r in results if r["score"] >= thr]
    joint_scores = np.array([r["keypoints"][2::3] for r in drawn])
    shown = int((joint_scores >= thr).sum())
    assert 0 < len(drawn) < len(results) and 0 < shown < joint_scores.size  # thr splits both
    out = capsys.readouterr().out
    assert (f"drawn: {len(drawn)} of {len(results)} people (score >= 0.25, --draw-thr), with "
            f"{shown} of their {joint_scores.size} joints ({joint_scores.size - shown} scored "
            "below it)") in out
    assert "no box" not in out


def _numbered_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = [folder / f"{i:012d}.jpg" for i in range(1, count + 1)]
    for path in paths:
        cv2.imwrite(str(path), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    return paths


def test_images_without_a_box_are_named(job, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(job, "load_pose_model", lambda *a, **k: ScoredModel())
    paths = _numbered_images(tmp_path / "images", 8)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": i, "category_id": 1, "bbox": [4, 4, 30, 40],
                                  "score": 0.9} for i in (2, 5)]))

    results = job.main(["--checkpoint", str(tmp_path / "model.pth"), str(tmp_path / "images"),
                        "--bbox-file", str(boxes), "--out", str(tmp_path / "o")])

    assert sorted(r["image_id"] for r in results) == [2, 5]
    without = [p.name for p in paths if int(p.stem) not in (2, 5)]
    out = capsys.readouterr().out
    assert "2 people in 2 images" in out
    assert (f"6 of 8 images got no box from {boxes}, so no prediction: "
            f"{', '.join(without[:5])} and 1 more") in out
    assert without[5] not in out


def test_a_box_file_with_no_box_on_the_images_predicts_nothing(job, tmp_path, monkeypatch,
                                                               capsys):
    monkeypatch.setattr(job, "load_pose_model", lambda *a, **k: ScoredModel())
    _numbered_images(tmp_path / "images", 2)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [4, 4, 30, 40],
                                  "score": 0.2}]))

    results = job.main(["--checkpoint", str(tmp_path / "m.pth"), str(tmp_path / "images"),
                        "--bbox-file", str(boxes), "--bbox-score-thr", "0.5",
                        "--out", str(tmp_path / "o")])

    assert results == [] and json.loads((tmp_path / "o" / "predictions.json").read_text()) == []
    assert (f"2 of 2 images got no box from {boxes} (boxes scoring >= 0.5, --bbox-score-thr), "
            "so no prediction: 000000000001.jpg, 000000000002.jpg") in capsys.readouterr().out


def test_an_empty_overlay_says_why(job, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(job, "load_pose_model", lambda *a, **k: ScoredModel())
    _numbered_images(tmp_path / "images", 2)
    job.main(["--checkpoint", str(tmp_path / "m.pth"), str(tmp_path / "images"), "--draw-thr",
              "1.5", "--out", str(tmp_path / "o")])  # above every score
    assert ("drawn: 0 of 2 people (score >= 1.5, --draw-thr): all scored below it; lower "
            "--draw-thr to draw them") in capsys.readouterr().out


def test_cuda_without_a_gpu_is_refused_before_the_model(job, student, real_samples, tmp_path,
                                                       monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(job, "load_pose_model", lambda *a, **k: pytest.fail("model loaded"))
    err = _error(job, ["--checkpoint", str(student), str(real_samples / "coco"),
                       "--out", str(tmp_path / "o"), "--device", "cuda"], capsys)
    assert err == ("predict.py: error: --device cuda: PyTorch sees no CUDA GPU on this "
                   "machine (torch.cuda.is_available() is False); pass --device cpu\n")
