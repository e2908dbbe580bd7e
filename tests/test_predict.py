"""``jobs/predict.py``: keypoints of the people in image files, by the evaluation's path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from unipose_ray.checkpoints import save_checkpoint
from unipose_ray.evaluation.coco_metric import bbox_keypoint_score
from unipose_ray.evaluation.topdown import predict, read_detections
from unipose_ray.export import export_onnx
from unipose_ray.inference import image_infos
from unipose_ray.models import build_from_config, build_rtmpose, write_mmpose_config
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

    results = job.main(["--checkpoint", str(checkpoint), "--config", str(config),
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
    err = _error(job, ["--checkpoint", str(other), "--config",
                       str(student.parent / "model_config.py"), str(real_samples / "coco"),
                       "--out", str(tmp_path / "o")], capsys)
    assert "does not fit" in err and "shape mismatches" in err


def test_a_missing_config_says_what_to_pass(job, tmp_path, real_samples, capsys):
    checkpoint = save_checkpoint(build_rtmpose("t", COCO.num_keypoints, (64, 96),
                                               sigma=(1.63, 2.12)), tmp_path / "alone.pth")
    err = _error(job, ["--checkpoint", str(checkpoint), str(real_samples / "coco"),
                       "--out", str(tmp_path / "o")], capsys)
    assert "model_config.py" in err and "--config" in err
