"""Predictions and metrics equal MMPose's own, on the real COCO and MPII samples.

For three MMPose-format models (a demo COCO teacher's config as this project writes it, and
MMPose's own RTMPose-t COCO and RTMPose-m MPII configs), MMPose's test loop (its dataset
with the config's test pipeline, ``bbox_file`` for detector boxes, ``model.test_step``,
``CocoMetric`` / ``MpiiPCKAccuracy``) is the reference. This project's path is the one
``jobs/evaluate.py`` takes: :func:`~unipose_ray.evaluation.topdown.predict` for the
keypoints, the job itself for the metrics.

The weights are random (no checkpoint can be downloaded here), with the classifier scaled
so that logits reach a trained RTMPose's range (keypoint scores on both sides of
CocoMetric's 0.2 threshold). That does not matter for the predictions; for the metrics, a
random model scores ~0 against the real labels, so they are compared on pseudo ground
truth: MMPose's predictions moved by seeded noise, which gives non-trivial AP and PCKh.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset
from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.data.transforms import AugmentConfig
from unipose_ray.evaluation.coco_metric import stable_metric_names
from unipose_ray.evaluation.cross_dataset import EvalSet, as_percent
from unipose_ray.evaluation.topdown import eval_mode, predict, simcc_logits
from unipose_ray.models import (
    build_from_config,
    build_rtmpose,
    load_mmpose_config,
    write_mmpose_config,
)
from unipose_ray.models.checkpoints import save_checkpoint
from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import COCO, KEYPOINT_SETS, keypoint_set_of

import_mmpose()
import mmpose  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmpose.apis import init_model  # noqa: E402
from mmpose.datasets import CocoDataset, MpiiDataset  # noqa: E402
from mmpose.evaluation.metrics import CocoMetric, MpiiPCKAccuracy  # noqa: E402

CONFIGS = Path(mmpose.__file__).parent / ".mim" / "configs" / "body_2d_keypoint" / "rtmpose"
PX_TOLERANCE = 0.01
TIE_MARGIN = 1e-4  # relative logit gap under which float rounding decides the argmax


@dataclass(frozen=True)
class Model:
    config: Path
    checkpoint: Path


def _trained_logit_range(model):
    """Scale a fresh head's classifier (logits ~1e-6) so that the keypoint scores (the max
    logits) of a random image sit around 0.4, on both sides of CocoMetric's 0.2 threshold,
    as a trained RTMPose's do."""
    w, h = model.spec.input_size
    images = torch.randint(0, 256, (2, 3, h, w), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        simcc_x, _ = model.eval()(images)
        factor = 0.4 / simcc_x.amax(dim=-1).median()
        for layer in (model.estimator.head.cls_x, model.estimator.head.cls_y):
            layer.weight *= factor
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Model]:
    """Random-weight checkpoints saved as MMPose files, with their configs."""
    root = tmp_path_factory.mktemp("parity")
    torch.manual_seed(0)
    out = {}
    demo = _trained_logit_range(build_rtmpose("t", COCO.num_keypoints, (64, 96),
                                              sigma=(1.63, 2.12)))  # a demo teacher
    out["demo_teacher_coco"] = Model(
        write_mmpose_config(demo, "t", root / "demo" / "model_config.py", COCO.dataset_meta()),
        save_checkpoint(demo, root / "demo" / "best.pth", dataset_meta=COCO.dataset_meta()))
    for name, config in (("rtmpose-t_coco", CONFIGS / "coco" / "rtmpose-t_8xb256-420e_coco-256x192.py"),
                         ("rtmpose-m_mpii", CONFIGS / "mpii" / "rtmpose-m_8xb64-210e_mpii-256x256.py")):
        model = _trained_logit_range(build_from_config(config))
        out[name] = Model(config, save_checkpoint(model, root / f"{name}.pth"))
    return out


@pytest.fixture(scope="module")
def mpii_files(real_samples, tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """The MPII samples and head boxes for PCKh (the samples have none: a box spanning the
    head top and upper neck, in ``mpii_gt_val.mat``'s layout)."""
    ann = real_samples / "mpii" / "test_mpii.json"
    boxes, head_sizes = [], []
    for a in json.loads(ann.read_text()):
        joints = np.asarray(a["joints"])
        top, neck = joints[9], joints[8]
        half = 0.75 * np.linalg.norm(top - neck)
        centre = (top + neck) / 2
        boxes.append([centre - half, centre + half])
        head_sizes.append(0.6 * np.linalg.norm(2 * half * np.ones(2)))  # MPII: 0.6 x diagonal
    path = tmp_path_factory.mktemp("mpii") / "headboxes.mat"
    scipy.io.savemat(path, {"headboxes_src": np.transpose(np.asarray(boxes), (1, 2, 0))})
    return ann, path, np.asarray(head_sizes)


# --- MMPose's own test loop ------------------------------------------------------------------


@dataclass
class Reference:
    """MMPose's results by instance id: keypoints ``(K, 2)``, scores ``(K,)``, input boxes
    (``x1, y1, x2, y2``), their scores and image ids; and its metric."""

    keypoints: dict[int, np.ndarray]
    scores: dict[int, np.ndarray]
    boxes: dict[int, np.ndarray]
    box_scores: dict[int, float]
    images: dict[int, int]
    metrics: dict[str, float]


def mmpose_test_loop(model: Model, dataset: str, ann_file: Path, img_dir: Path,
                     flip_test: bool, bbox_file: Path | None = None,
                     headbox_file: Path | None = None, bbox_score_thr: float | None = None
                     ) -> Reference:
    cfg = load_mmpose_config(model.config)  # MMPose's config, buildable on mmcv-lite
    estimator = init_model(cfg, str(model.checkpoint), device="cpu")
    estimator.test_cfg["flip_test"] = flip_test
    common = dict(ann_file=str(ann_file), data_root="", data_prefix=dict(img=f"{img_dir}/"),
                  test_mode=True, pipeline=cfg.test_dataloader.dataset.pipeline)
    if dataset == "coco":
        data = CocoDataset(data_mode="topdown", bbox_file=str(bbox_file) if bbox_file else None,
                           filter_cfg=None if bbox_score_thr is None else dict(
                               bbox_score_thr=bbox_score_thr), **common)
        metric = CocoMetric(ann_file=str(ann_file))
    else:
        data = MpiiDataset(headbox_file=str(headbox_file), **common)
        metric = MpiiPCKAccuracy(norm_item="head")
    metric.dataset_meta = data.metainfo
    keypoints, scores, boxes, box_scores, images = {}, {}, {}, {}, {}
    with torch.no_grad():
        for start in range(0, len(data), 16):
            batch = pseudo_collate([data[i] for i in range(start, min(start + 16, len(data)))])
            outputs = estimator.test_step(batch)
            metric.process(batch, [o.to_dict() for o in outputs])
            for out in outputs:
                keypoints[out.id] = out.pred_instances.keypoints[0]
                scores[out.id] = out.pred_instances.keypoint_scores[0]
                boxes[out.id] = out.gt_instances.bboxes[0]
                box_scores[out.id] = float(out.gt_instances.bbox_scores[0])
                images[out.id] = out.img_id
    return Reference(keypoints, scores, boxes, box_scores, images, metric.evaluate(len(data)))


# --- This project's path ---------------------------------------------------------------------


def our_predictions(model: Model, dataset: str, ann_file: Path, img_dir: Path,
                    flip_test: bool, bbox_file: Path | None = None):
    net = build_from_config(model.config, model.checkpoint)
    records = (read_coco if dataset == "coco" else read_mpii)(ann_file, img_dir)
    eval_set = EvalSet(dataset, "unused", str(ann_file), img_dir=str(img_dir),
                       bbox_file=None if bbox_file is None else str(bbox_file))
    boxes, _ = eval_set.boxes(records)
    keypoint_set = keypoint_set_of(net.spec.num_keypoints)
    pred = predict(net, boxes, keypoint_set, net.spec.codec, flip_test=flip_test, batch_size=16)
    return [b.instance_id for b in boxes], pred, lambda: argmax_margin(net, boxes, keypoint_set,
                                                                       flip_test)


def argmax_margin(net, boxes, keypoint_set: str, flip_test: bool) -> np.ndarray:
    """``(N, K)`` gap between the best and second-best logit, relative to the largest logit
    of the row (the smaller of the two axes).

    Random weights give tiny logits (~1e-6) and a few exact ties (relative gaps ~1e-5):
    there float rounding decides the argmax, in MMPose as here, so those joints cannot be
    compared.
    """
    data = TopdownDataset(boxes, PipelineConfig(codec=net.spec.codec,
                                                augment=AugmentConfig.none()))
    images = torch.from_numpy(np.stack([data.sample(i).image for i in range(len(data))]))
    flip = KEYPOINT_SETS[keypoint_set].flip_permutation.tolist() if flip_test else None
    with torch.no_grad(), eval_mode(net):
        logits = simcc_logits(net, images, flip)
    gaps = [np.diff(np.sort(t.numpy(), axis=-1)[..., -2:], axis=-1)[..., 0]
            / np.abs(t.numpy()).max(axis=-1) for t in logits]
    return np.minimum(*gaps)


def assert_same_predictions(ids, pred, margin, ref: Reference) -> None:
    """Keypoints within 0.01 px of MMPose's, except where a tie decided (``margin()``)."""
    assert sorted(ids) == sorted(ref.keypoints), "a different set of boxes than MMPose's"
    want = np.stack([ref.keypoints[i] for i in ids])
    differ = np.abs(pred.keypoints - want).max(axis=-1) > PX_TOLERANCE
    if differ.any():
        ties = margin() <= TIE_MARGIN
        assert ties.mean() < 0.02, "too many ties to compare"
        assert not (differ & ~ties).any(), (
            f"keypoints differ from MMPose's beyond {PX_TOLERANCE} px at (box, joint) "
            f"{np.argwhere(differ & ~ties).tolist()}")
    np.testing.assert_allclose(pred.scores, np.stack([ref.scores[i] for i in ids]),
                               rtol=0, atol=1e-4)


COCO_CASES = [(m, boxes, flip) for m in ("demo_teacher_coco", "rtmpose-t_coco")
              for boxes in ("gt", "detector") for flip in (True, False)]


@pytest.mark.parametrize(("name", "boxes", "flip_test"), COCO_CASES)
def test_coco_keypoints_equal_mmposes(models, real_samples, name, boxes, flip_test):
    coco = real_samples / "coco"
    bbox_file = coco / "test_coco_det_AP_H_56.json" if boxes == "detector" else None
    ref = mmpose_test_loop(models[name], "coco", coco / "test_coco.json", coco, flip_test,
                           bbox_file)
    ids, pred, margin = our_predictions(models[name], "coco", coco / "test_coco.json", coco,
                                        flip_test, bbox_file)
    assert_same_predictions(ids, pred, margin, ref)
    assert len(ids) == (118 if bbox_file else 12)  # 14 GT people, 2 without keypoints


@pytest.mark.parametrize("flip_test", [True, False])
def test_mpii_keypoints_equal_mmposes(models, real_samples, mpii_files, flip_test):
    ann, headboxes, _ = mpii_files
    img_dir = real_samples / "mpii"
    ref = mmpose_test_loop(models["rtmpose-m_mpii"], "mpii", ann, img_dir, flip_test,
                           headbox_file=headboxes)
    ids, pred, margin = our_predictions(models["rtmpose-m_mpii"], "mpii", ann, img_dir, flip_test)
    assert_same_predictions(ids, pred, margin, ref)


# --- Metrics on pseudo ground truth ----------------------------------------------------------


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``x1, y1, x2, y2`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def pseudo_coco_gt(real: Path, ref: Reference, out: Path, noise_px: float = 3.0) -> Path:
    """``real`` with every labelled keypoint moved to MMPose's prediction plus noise: the
    prediction on the best-scoring box that overlaps the person (IoU >= 0.5), else on the
    box that overlaps it most."""
    gt = json.loads(real.read_text())
    rng = np.random.default_rng(0)
    for ann in gt["annotations"]:
        if not ann["num_keypoints"]:  # MMPose skips people without keypoints
            continue
        x, y, w, h = ann["bbox"]
        box = np.array([x, y, x + w, y + h])
        ious = {i: _iou(ref.boxes[i], box) for i in ref.boxes if ref.images[i] == ann["image_id"]}
        best = max(ious, key=lambda i: (ious[i] >= 0.5, ref.box_scores[i], ious[i]))
        kpts = np.reshape(ann["keypoints"], (-1, 3)).astype(float)
        labelled = kpts[:, 2] > 0
        moved = ref.keypoints[best] + rng.normal(scale=noise_px, size=(len(kpts), 2))
        kpts[labelled, :2] = moved[labelled]
        ann["keypoints"] = kpts.reshape(-1).tolist()
    out.write_text(json.dumps(gt))
    return out


def pseudo_mpii_gt(real: Path, ref: Reference, head_sizes: np.ndarray, out: Path) -> Path:
    """``real`` with joints at MMPose's predictions moved by 0-0.8 head sizes in random
    directions (so PCKh@0.1 and @0.5 are neither 0 nor 100), MATLAB 1-based like the file."""
    anns = json.loads(real.read_text())
    rng = np.random.default_rng(0)
    for index, ann in enumerate(anns):
        angle = rng.uniform(0, 2 * np.pi, 16)
        shift = rng.uniform(0, 0.8, (16, 1)) * head_sizes[index] * np.stack(
            [np.cos(angle), np.sin(angle)], axis=1)
        ann["joints"] = (ref.keypoints[index] + 1 + shift).tolist()
    out.write_text(json.dumps(anns))
    return out


def run_evaluate_job(evaluate, model: Model, args: list[str], flip_test: bool, tmp_path: Path
                     ) -> dict:
    output = tmp_path / "metrics.json"
    evaluate.main(["--model-config", str(model.config), "--checkpoint", str(model.checkpoint), *args,
                   "--flip-test" if flip_test else "--no-flip-test", "--output", str(output)])
    return json.loads(output.read_text())


@pytest.mark.parametrize(("boxes", "flip_test", "score_thr"), [
    ("gt", True, None), ("detector", True, None), ("detector", False, None),
    ("detector", True, 0.3)])
def test_coco_ap_equals_coco_metric(models, real_samples, load_job, tmp_path, boxes,
                                    flip_test, score_thr):
    model, coco = models["demo_teacher_coco"], real_samples / "coco"
    bbox_file = coco / "test_coco_det_AP_H_56.json" if boxes == "detector" else None
    source = mmpose_test_loop(model, "coco", coco / "test_coco.json", coco, flip_test, bbox_file)
    pseudo = pseudo_coco_gt(coco / "test_coco.json", source, tmp_path / "pseudo.json")
    ref = mmpose_test_loop(model, "coco", pseudo, coco, flip_test, bbox_file,
                           bbox_score_thr=score_thr)
    if score_thr is not None:  # MMPose's filter_cfg dropped the weak boxes
        assert 12 <= len(ref.keypoints) < len(source.keypoints)
    args = ["--coco-ann", str(pseudo), "--coco-img-dir", str(coco)]
    args += [] if score_thr is None else ["--bbox-score-thr", str(score_thr)]
    ours = run_evaluate_job(load_job("evaluate"), model, args + (["--bbox-file", str(bbox_file)] if bbox_file else []),
                            flip_test, tmp_path)
    assert 0.02 < ref.metrics["coco/AP"] < 0.98, "pseudo GT should give a non-trivial AP"
    expected = stable_metric_names({k.removeprefix("coco/"): v for k, v in ref.metrics.items()})
    assert len(expected) == 10
    for name, value in expected.items():  # --output writes AP and AR in %, as tables show them
        assert ours[name] == pytest.approx(as_percent(name, value), abs=1e-7), name


@pytest.mark.parametrize("flip_test", [True, False])
def test_mpii_pckh_equals_mpii_pck_accuracy(models, real_samples, mpii_files, load_job, tmp_path,
                                            flip_test):
    model, img_dir = models["rtmpose-m_mpii"], real_samples / "mpii"
    ann, headboxes, head_sizes = mpii_files
    first = mmpose_test_loop(model, "mpii", ann, img_dir, flip_test, headbox_file=headboxes)
    pseudo = pseudo_mpii_gt(ann, first, head_sizes, tmp_path / "pseudo_mpii.json")
    ref = mmpose_test_loop(model, "mpii", pseudo, img_dir, flip_test, headbox_file=headboxes)
    ours = run_evaluate_job(load_job("evaluate"), model, ["--mpii-ann", str(pseudo), "--mpii-img-dir", str(img_dir),
                                    "--mpii-headbox-file", str(headboxes)], flip_test, tmp_path)
    assert 5 < ref.metrics["PCK@0.1"] < ref.metrics["PCK"] < 100, "pseudo GT: non-trivial PCKh"
    assert ours["mpii_PCKh"] == pytest.approx(ref.metrics["PCK"], abs=1e-4)
    assert ours["mpii_PCKh@0.1"] == pytest.approx(ref.metrics["PCK@0.1"], abs=1e-4)
