"""The cross-dataset evaluation, driven by oracle models that know the ground truth.

An oracle returns, for each crop the evaluation feeds it, SimCC logits peaked at the GT
joints of that crop (built with the pipeline's own crop warp and SimCC encoder, and looked
up by the crop's pixels, so it does not depend on batch order). A perfect oracle must get
full marks up to the SimCC quantisation, which each test bounds from the data before it
asserts; a noisy one must get exactly what MMPose's ``CocoMetric`` gives the same logits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from mmpose_reference import mmpose_coco_metric

from unipose_ray.data.geometry import apply_affine, invert_affine
from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset
from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.data.records import InstanceRecord, write_records
from unipose_ray.data.synthetic import SyntheticConfig, SyntheticDataset, generate_dataset
from unipose_ray.data.transforms import (
    AugmentConfig,
    CodecConfig,
    simcc_targets,
)
from unipose_ray.evaluation.cross_dataset import EvalSet, as_percent, evaluate_model, format_table
from unipose_ray.evaluation.topdown import predict, to_unified
from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import COCO, MPII, UNIFIED, KeypointSet, mapping_for

CODEC = CodecConfig()  # RTMPose's 192x256 crops, split ratio 2
OKS_THRESHOLDS_MAX = 0.95  # COCOeval's highest OKS threshold
PCKH_LOW_THR = 0.1


# --- The oracle ------------------------------------------------------------------------------


def _crop_key(image) -> bytes:
    pixels = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).digest()


class Oracle(torch.nn.Module):
    """``(B, 3, H, W)`` crops -> the precomputed SimCC logits of each crop (by its pixels).

    It knows the plain crops only, so the evaluations here run without the flip test.
    """

    def __init__(self, logits: dict[bytes, tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__()
        self.logits = logits
        self.seen = 0

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.logits[_crop_key(image)] for image in images]
        self.seen += len(rows)
        return (torch.from_numpy(np.stack([x for x, _ in rows])),
                torch.from_numpy(np.stack([y for _, y in rows])))


@dataclass(frozen=True)
class GroundTruth:
    """Per record: ``xy (N, 21, 2)`` image pixels, ``labelled (N, 21)``, OKS ``area (N,)``."""

    xy: np.ndarray
    labelled: np.ndarray
    area: np.ndarray


def gt_from_records(records: list[InstanceRecord]) -> GroundTruth:
    return GroundTruth(np.stack([r.keypoints for r in records]),
                       np.stack([r.weights > 0 for r in records]),
                       np.array([r.area for r in records]))


def gt_from_unified_file(records: list[InstanceRecord], path: Path, id_offset: int = 0
                         ) -> GroundTruth:
    """The 21-joint annotations of ``records`` (annotation id = instance id + offset)."""
    anns = {a["id"]: a for a in json.loads(Path(path).read_text())["annotations"]}
    rows = [anns[r.instance_id + id_offset] for r in records]
    keypoints = np.stack([np.reshape(a["keypoints"], (UNIFIED.num_keypoints, 3)) for a in rows])
    return GroundTruth(keypoints[..., :2], keypoints[..., 2] > 0,
                       np.array([a["area"] for a in rows]))


def _dataset(records: list[InstanceRecord]) -> TopdownDataset:
    return TopdownDataset(records, PipelineConfig(codec=CODEC, augment=AugmentConfig.none()))


def oracle_logits(records: list[InstanceRecord], gt: GroundTruth, keypoint_set: str,
                  noise_px: float = 0.0, seed: int = 0) -> dict[bytes, tuple]:
    """Logits of a ``keypoint_set`` model that sees the GT (plus crop-pixel noise, and then
    random per-joint confidences, some under the 0.2 rescoring threshold)."""
    rng = np.random.default_rng(seed)
    joints = mapping_for(keypoint_set).to_unified
    data = _dataset(records)
    table = {}
    for i in range(len(records)):
        sample = data.sample(i)
        crop_xy = apply_affine(gt.xy[i].astype(np.float64), sample.warp)
        crop_xy += rng.normal(scale=noise_px, size=crop_xy.shape) if noise_px else 0.0
        labelled = gt.labelled[i].astype(np.float32)
        target_x, target_y, weights = simcc_targets(crop_xy, labelled, CODEC)
        if not noise_px:  # every labelled joint has a peak: the oracle is perfect
            assert np.array_equal(weights, labelled), f"record {i}: a GT joint left the crop"
        else:
            confidence = rng.uniform(0.05, 1.0, (len(target_x), 1)).astype(np.float32)
            target_x, target_y = target_x * confidence, target_y * confidence
        table[_crop_key(sample.image)] = (target_x[joints], target_y[joints])
    return table


# --- Bounds from the data ----------------------------------------------------------------------


def _max_quantisation_error(records: list[InstanceRecord]) -> np.ndarray:
    """``(N,)`` image pixels: the farthest a perfect SimCC peak decodes from its joint.

    The peak sits at the nearest bin, half a bin (``0.5 / split_ratio`` crop pixels) off
    per axis at most; a crop pixel is ``scale / input_size`` image pixels.
    """
    data = _dataset(records)
    scale = np.array([data.params(i).scale for i in range(len(records))])
    per_axis = 0.5 / CODEC.split_ratio * scale / np.asarray(CODEC.input_size)
    return np.linalg.norm(per_axis, axis=1)


def _worst_oks(records: list[InstanceRecord], gt: GroundTruth, keypoint_set: KeypointSet
               ) -> np.ndarray:
    """``(N,)`` the lowest OKS (xtcocotools' formula) a perfect oracle can get per instance."""
    joints = mapping_for(keypoint_set.name).to_unified
    variances = (2 * np.asarray(keypoint_set.sigmas)) ** 2
    d = _max_quantisation_error(records)[:, None]
    oks = np.exp(-(d**2) / variances / (gt.area[:, None] + np.spacing(1)) / 2)
    labelled = gt.labelled[:, joints]
    return np.array([o[m].mean() if m.any() else 1.0 for o, m in zip(oks, labelled)])


def _assert_quantisation_keeps_ap_perfect(records, gt, keypoint_set) -> None:
    worst = _worst_oks(records, gt, keypoint_set)
    assert worst.min() > OKS_THRESHOLDS_MAX, "the data leaves no room to expect AP = 1"


def _assert_quantisation_keeps_pckh_perfect(records) -> None:
    head = np.array([r.head_size for r in records])
    assert (_max_quantisation_error(records) / head).max() < PCKH_LOW_THR


# --- Data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    files: SyntheticDataset
    coco: list[InstanceRecord]
    mpii: list[InstanceRecord]
    coco_set: EvalSet
    mpii_set: EvalSet

    def oracle(self, keypoint_set: str) -> Oracle:
        coco_gt = gt_from_unified_file(self.coco, self.files.coco_val_unified)
        mpii_gt = gt_from_unified_file(self.mpii, self.files.mpii_val_unified, id_offset=1)
        return Oracle({**oracle_logits(self.coco, coco_gt, keypoint_set),
                       **oracle_logits(self.mpii, mpii_gt, keypoint_set)})


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Generated:
    root = tmp_path_factory.mktemp("cross_dataset")
    files = generate_dataset(root / "data", SyntheticConfig(
        seed=5, coco_train=0, mpii_train=0, coco_val=12, mpii_val=16))
    coco = read_coco(files.coco_val_ann, files.coco_val_images)
    mpii = read_mpii(files.mpii_val_ann, files.mpii_val_images)
    coco_path = write_records(coco, root / "coco_val.parquet")
    mpii_path = write_records(mpii, root / "mpii_val.parquet")
    return Generated(
        files, coco, mpii,
        EvalSet("coco", str(coco_path), str(files.coco_val_ann), str(files.coco_val_unified)),
        EvalSet("mpii", str(mpii_path), None, str(files.mpii_val_unified)),
    )


# --- Perfect oracles -------------------------------------------------------------------------


def test_perfect_unified_oracle_gets_full_marks(generated):
    g = generated
    coco_gt = gt_from_unified_file(g.coco, g.files.coco_val_unified)
    mpii_gt = gt_from_unified_file(g.mpii, g.files.mpii_val_unified, id_offset=1)
    _assert_quantisation_keeps_ap_perfect(g.coco, coco_gt, COCO)
    _assert_quantisation_keeps_ap_perfect(g.coco, coco_gt, UNIFIED)
    _assert_quantisation_keeps_ap_perfect(g.mpii, mpii_gt, UNIFIED)
    _assert_quantisation_keeps_pckh_perfect(g.mpii)

    oracle = g.oracle("unified")
    metrics = evaluate_model(oracle, "unified", CODEC, [g.coco_set, g.mpii_set], batch_size=7,
                             flip_test=False)

    assert oracle.seen == len(g.coco) + len(g.mpii)  # every crop once, none unknown
    for name in ("coco_AP", "coco_AP50", "coco_AP75", "coco_AR", "unified_AP",
                 "unified_AP_coco_domain", "unified_AP_mpii_domain"):
        assert metrics[name] == pytest.approx(1.0), name
    assert metrics["mpii_PCKh"] == pytest.approx(100.0)
    assert metrics["mpii_PCKh@0.1"] == pytest.approx(100.0)
    assert metrics["score"] == pytest.approx(100.0)
    for name in ("transfer_PCK", "transfer_PCK_coco_domain", "transfer_PCK_mpii_domain"):
        assert metrics[name] == pytest.approx(100.0), name
    table = format_table({"oracle": metrics})
    assert table.splitlines()[1].split()[1:] == ["100.00"] * 5


def test_coco_only_oracle_misses_the_mpii_head_joints(generated):
    g = generated
    metrics = evaluate_model(g.oracle("coco"), "coco", CODEC, [g.coco_set, g.mpii_set], flip_test=False)

    assert metrics["coco_AP"] == pytest.approx(1.0)
    # PCKh weighs each joint by its visible count, pelvis and thorax left out; a COCO model
    # has every MPII joint but upper_neck and head_top.
    visible = np.stack([r.visible for r in g.mpii])[:, mapping_for("mpii").to_unified] > 0
    counted = [n for n in MPII.names if n not in ("pelvis", "thorax")]
    missing = ("upper_neck", "head_top")
    total = sum(visible[:, MPII.index(n)].sum() for n in counted)
    hit = sum(visible[:, MPII.index(n)].sum() for n in counted if n not in missing)
    assert 0 < hit < total
    assert metrics["mpii_PCKh"] == pytest.approx(100.0 * hit / total)
    assert metrics["mpii_PCKh/head_top"] == 0.0
    assert metrics["mpii_PCKh/left_wrist"] == pytest.approx(100.0)
    assert metrics["unified_AP"] < 1.0  # the four extra joints are labelled in its GT
    expected_score = (100.0 * metrics["coco_AP"] + metrics["mpii_PCKh"]) / 2
    assert metrics["score"] == pytest.approx(expected_score)


def test_max_samples_scores_whole_images_against_their_own_gt(generated):
    g = generated
    oracle = g.oracle("unified")
    subset = EvalSet("coco", g.coco_set.records_path, g.coco_set.ann_file,
                     g.coco_set.unified_ann_file, max_samples=5)
    records = subset.records()
    images = {r.image_id for r in records}
    assert 5 <= len(records) < len(g.coco)
    assert len(records) == sum(r.image_id in images for r in g.coco)  # whole images

    metrics = evaluate_model(oracle, "unified", CODEC, [subset], flip_test=False)
    assert metrics["coco_AP"] == pytest.approx(1.0)  # the other images' people are not missed
    assert metrics["unified_AP"] == pytest.approx(1.0)


def test_instance_count_equal_to_the_joint_count_keeps_the_joint_axis(generated, tmp_path):
    """N == K makes a (N, K) array's joint axis ambiguous; the evaluation must not care."""
    g = generated
    coco17 = g.coco[: COCO.num_keypoints]
    oracle = Oracle(oracle_logits(coco17, gt_from_records(coco17), "coco"))
    pred = to_unified(predict(oracle, coco17, "coco", CODEC, flip_test=False), "coco")
    assert pred.scores.shape == (17, UNIFIED.num_keypoints)
    labelled = np.stack([r.weights > 0 for r in coco17])  # (17, 21), COCO slots only
    assert labelled.sum() > 17
    assert (pred.scores[labelled] == 1.0).all()
    assert (pred.scores[:, 17:] == 0.0).all()
    error = np.linalg.norm(pred.keypoints - np.stack([r.keypoints for r in coco17]), axis=-1)
    bound = np.broadcast_to(_max_quantisation_error(coco17)[:, None], error.shape)
    assert (error[labelled] <= bound[labelled] + 1e-3).all()

    mpii21 = g.mpii[: UNIFIED.num_keypoints]
    assert len(mpii21) == UNIFIED.num_keypoints
    path = write_records(mpii21, tmp_path / "mpii21.parquet")
    mpii_gt = gt_from_unified_file(mpii21, g.files.mpii_val_unified, id_offset=1)
    oracle = Oracle(oracle_logits(mpii21, mpii_gt, "unified"))
    metrics = evaluate_model(oracle, "unified", CODEC, [EvalSet("mpii", str(path))], flip_test=False)
    assert metrics["mpii_PCKh"] == pytest.approx(100.0)


def test_real_coco_samples_perfect_oracle(real_samples, tmp_path):
    ann = real_samples / "coco" / "test_coco.json"
    records = read_coco(ann, real_samples / "coco")
    gt = gt_from_records(records)
    _assert_quantisation_keeps_ap_perfect(records, gt, COCO)
    path = write_records(records, tmp_path / "coco.parquet")

    oracle = Oracle(oracle_logits(records, gt, "coco"))
    metrics = evaluate_model(oracle, "coco", CODEC, [EvalSet("coco", str(path), str(ann))], flip_test=False)
    assert metrics["coco_AP"] == pytest.approx(1.0)
    assert metrics["score"] == pytest.approx(100.0)


# --- Noisy oracles against MMPose's CocoMetric -----------------------------------------------


def _mmpose_coco_metric(ann_file: Path, records: list[InstanceRecord], oracle: Oracle,
                        oracle_set: str, evaluated: KeypointSet, id_offset: int = 0) -> dict:
    """MMPose's decoder and ``CocoMetric`` on the oracle's logits; crops mapped back with
    the pipeline's inverse warp (the same affine as MMPose's, also for rotated crops)."""
    import_mmpose()
    from mmpose.codecs import SimCCLabel

    decoder = SimCCLabel(input_size=CODEC.input_size, sigma=CODEC.sigma,
                         simcc_split_ratio=CODEC.split_ratio, normalize=False, use_dark=False)
    to_unified = mapping_for(oracle_set).to_unified
    joints = mapping_for(evaluated.name).to_unified
    data = _dataset(records)
    samples = []
    for i, r in enumerate(records):
        sample = data.sample(i)
        simcc_x, simcc_y = oracle.logits[_crop_key(sample.image)]
        crop_xy, scores = decoder.decode(simcc_x[None], simcc_y[None])
        inverse = invert_affine(sample.warp).astype(np.float32)
        xy = np.zeros((UNIFIED.num_keypoints, 2), np.float32)
        xy[to_unified] = crop_xy[0] @ inverse[:, :2].T + inverse[:, 2]
        unified_scores = np.zeros(UNIFIED.num_keypoints, np.float32)
        unified_scores[to_unified] = scores[0]
        x, y, w, h = r.bbox
        samples.append({
            "id": r.instance_id + id_offset,
            "img_id": r.image_id,
            "pred_instances": {
                "keypoints": xy[joints][None],
                "keypoint_scores": unified_scores[joints][None],
                "bboxes": np.array([[x, y, x + w, y + h]], np.float32),
                "bbox_scores": np.ones(1, np.float32),
            },
            "gt_instances": {"bbox_scales": np.asarray(sample.params.scale, np.float32)[None]},
        })
    return mmpose_coco_metric(ann_file, samples, evaluated)


_FLAT_SUFFIXES = {"AP": "AP", "AP .5": "AP50", "AP .75": "AP75", "AP (M)": "AP_M",
                  "AP (L)": "AP_L", "AR": "AR", "AR .5": "AR50", "AR .75": "AR75",
                  "AR (M)": "AR_M", "AR (L)": "AR_L"}


@pytest.mark.parametrize("keypoint_set", ["coco", "mpii"])
def test_transfer_pck_counts_only_the_joints_the_images_dataset_lacks(generated, keypoint_set):
    # A perfect single-dataset model: it has the other dataset's joints only on its own
    # images' complement where its set covers them (COCO: the face on MPII images; MPII:
    # the spine and head top on COCO images) and misses the rest.
    g = generated
    metrics = evaluate_model(g.oracle(keypoint_set), keypoint_set, CODEC, [g.coco_set, g.mpii_set],
                             flip_test=False)
    own, other = ("coco", "mpii") if keypoint_set == "coco" else ("mpii", "coco")
    assert metrics[f"transfer_PCK_{own}_domain"] == 0.0
    assert metrics[f"transfer_PCK_{other}_domain"] == pytest.approx(100.0)
    assert metrics["transfer_PCK"] == pytest.approx(50.0)


def _assert_matches_mmpose(metrics: dict, prefix: str, reference: dict) -> None:
    assert set(reference) == set(_FLAT_SUFFIXES)
    for name, value in reference.items():
        assert metrics[f"{prefix}_{_FLAT_SUFFIXES[name]}"] == pytest.approx(value, abs=1e-6), name


@pytest.mark.parametrize("noise_px", [2.0, 6.0])
def test_noisy_oracle_coco_and_unified_ap_match_mmpose(generated, noise_px):
    g = generated
    coco_gt = gt_from_unified_file(g.coco, g.files.coco_val_unified)
    oracle = Oracle(oracle_logits(g.coco, coco_gt, "unified", noise_px, seed=int(noise_px)))
    metrics = evaluate_model(oracle, "unified", CODEC, [g.coco_set], flip_test=False)

    _assert_matches_mmpose(metrics, "coco", _mmpose_coco_metric(
        g.files.coco_val_ann, g.coco, oracle, "unified", COCO))
    unified = _mmpose_coco_metric(g.files.coco_val_unified, g.coco, oracle, "unified", UNIFIED)
    assert metrics["unified_AP"] == pytest.approx(unified["AP"], abs=1e-6)  # only AP is kept
    assert 0.0 < metrics["coco_AP"] < 1.0
    assert metrics["unified_AP"] == metrics["unified_AP_coco_domain"]


def test_noisy_oracle_on_real_coco_samples_matches_mmpose(real_samples, tmp_path):
    ann = real_samples / "coco" / "test_coco.json"
    records = read_coco(ann, real_samples / "coco")
    path = write_records(records, tmp_path / "coco.parquet")
    oracle = Oracle(oracle_logits(records, gt_from_records(records), "coco", 3.0, seed=1))
    metrics = evaluate_model(oracle, "coco", CODEC, [EvalSet("coco", str(path), str(ann))], flip_test=False)

    _assert_matches_mmpose(metrics, "coco", _mmpose_coco_metric(ann, records, oracle, "coco", COCO))
    assert 0.0 < metrics["coco_AP"] < 1.0


@pytest.mark.parametrize(("metric", "shown"), [
    ("coco_AP", 50.0), ("val/coco_AP50", 50.0), ("coco_AR_L", 50.0), ("unified_AP", 50.0),
    ("unified_AP_mpii_domain", 50.0), ("mpii_PCKh", 0.5), ("transfer_PCK", 0.5),
    ("score", 0.5)])
def test_tables_show_cocoevals_fractions_in_percent(metric, shown):
    """COCOeval's AP and AR (fractions) in %, like PCKh; what is already % stays."""
    assert as_percent(metric, 0.5) == shown
