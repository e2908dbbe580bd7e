"""Generated data: real file formats (pycocotools, MMPose's MpiiDataset), determinism,
label consistency between the files, and the left/right colouring the student learns from."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO as CocoApi

from unipose_ray.data.synthetic import (
    SyntheticConfig,
    dataset_paths,
    generate_dataset,
    render_sample,
)
from unipose_ray.skeleton import COCO, UNIFIED, mapping_for

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = SyntheticConfig(seed=7, coco_train=6, coco_val=5, mpii_train=6, mpii_val=5)
MPII_TO_UNIFIED = mapping_for("mpii").to_unified


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), CONFIG, progress=False)


def _load(path: Path):
    return json.loads(Path(path).read_text())


def _tree_bytes(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_layout_is_what_dataset_paths_says(data):
    assert data == dataset_paths(data.root)
    for dataset in ("coco", "mpii"):
        for split in ("train", "val"):
            images = sorted(data.images_dir(dataset, split).glob("*.jpg"))
            assert len(images) == CONFIG.num_images(dataset, split)
            assert data.annotation_file(dataset, split).is_file()
        assert data.unified_val_file(dataset).is_file()


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_file_loads_in_pycocotools_with_17_keypoints(data, split):
    api = CocoApi(str(data.annotation_file("coco", split)))
    assert len(api.getImgIds()) == CONFIG.num_images("coco", split)
    assert len(api.getAnnIds()) >= CONFIG.num_images("coco", split)  # >= 1 person per image
    assert api.loadCats(1)[0]["keypoints"] == list(COCO.names)
    assert min(api.getAnnIds()) == 1  # COCOeval reads id 0 as "unmatched"
    for ann in api.loadAnns(api.getAnnIds()):
        image = api.loadImgs(ann["image_id"])[0]
        kp = np.array(ann["keypoints"]).reshape(-1, 3)
        assert kp.shape == (17, 3) and set(kp[:, 2]) <= {0, 1, 2}
        assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum()) > 0
        assert np.all(kp[kp[:, 2] == 0, :2] == 0)
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0
        assert x + w <= image["width"] and y + h <= image["height"]
        assert ann["iscrowd"] == 0 and ann["category_id"] == 1 and ann["area"] > 0
        on_disk = cv2.imread(str(data.images_dir("coco", split) / image["file_name"]))
        assert on_disk.shape[:2] == (image["height"], image["width"])


def test_coco_keypoints_are_the_rendered_truth(data):
    anns = _load(data.coco_val_ann)["annotations"]
    for image_id in (1, 3):
        _, labels = render_sample(CONFIG, "coco", "val", image_id - 1)
        written = [np.array(a["keypoints"]).reshape(17, 3)
                   for a in anns if a["image_id"] == image_id]
        truth = [label for label in labels if (label.visibility[:17] > 0).any()]
        assert len(written) == len(truth)
        for kp, label in zip(written, truth, strict=True):
            shown = label.visibility[:17] > 0
            np.testing.assert_array_equal(kp[:, 2], label.visibility[:17])
            np.testing.assert_allclose(kp[shown, :2], label.keypoints[:17][shown], atol=0.006)


def test_mpii_file_loads_in_mmpose_with_true_pixel_positions(data):
    from unipose_ray.models.compat import install_mmcv_ops_placeholder

    install_mmcv_ops_placeholder()  # what import_mmpose does, without the slow mmpose.models
    from mmpose.datasets import MpiiDataset

    entries = _load(data.mpii_val_ann)
    dataset = MpiiDataset(ann_file=str(data.mpii_val_ann), data_root="",
                          data_prefix=dict(img=str(data.mpii_val_images) + "/"),
                          test_mode=True, lazy_init=False)
    assert len(dataset) == len(entries) > 0
    unified = {a["id"]: a for a in _load(data.mpii_val_unified)["annotations"]}
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        truth = unified[index + 1]  # unified ids are MMPose's instance index + 1
        kp21 = np.array(truth["keypoints"]).reshape(21, 3)
        vis = info["keypoints_visible"][0] > 0
        np.testing.assert_array_equal(vis, kp21[MPII_TO_UNIFIED, 2] == 2)
        # MMPose keeps MPII joints 1-based (MATLAB), as in the real files
        np.testing.assert_allclose(info["keypoints"][0][vis] - 1, kp21[MPII_TO_UNIFIED][vis, :2],
                                   atol=0.006)
        x, y, w, h = truth["bbox"]
        np.testing.assert_allclose(info["bbox_center"][0], [x + w / 2, y + h / 2], atol=0.02)
        np.testing.assert_allclose(info["bbox_scale"][0], [max(w, h)] * 2, atol=0.02)
        assert Path(info["img_path"]).is_file() and info["img_id"] == truth["image_id"]


def test_mpii_head_box_is_a_square_of_head_length(data):
    for entry in _load(data.mpii_train_ann):
        x1, y1, x2, y2 = entry["head_box"]
        joints = np.array(entry["joints"])
        if entry["joints_vis"][8] and entry["joints_vis"][9]:  # upper_neck, head_top
            head_len = np.linalg.norm(joints[9] - joints[8])
            np.testing.assert_allclose([x2 - x1, y2 - y1], [head_len] * 2, atol=0.05)


@pytest.mark.parametrize("dataset", ["coco", "mpii"])
def test_unified21_file_agrees_with_the_dataset_file(data, dataset):
    unified = _load(data.unified_val_file(dataset))
    assert unified["categories"][0]["keypoints"] == list(UNIFIED.names)
    CocoApi(str(data.unified_val_file(dataset)))  # loads
    if dataset == "coco":
        coco = _load(data.coco_val_ann)
        assert unified["images"] == coco["images"]
        pairs = zip(unified["annotations"], coco["annotations"], strict=True)
        for u, c in pairs:
            assert (u["id"], u["image_id"], u["bbox"]) == (c["id"], c["image_id"], c["bbox"])
            assert u["keypoints"][: 17 * 3] == c["keypoints"]
    else:
        entries = _load(data.mpii_val_ann)
        ids = {i["file_name"]: i["id"] for i in unified["images"]}
        for u, e in zip(unified["annotations"], entries, strict=True):
            kp21 = np.array(u["keypoints"]).reshape(21, 3)[MPII_TO_UNIFIED]
            vis = np.array(e["joints_vis"]) == 1
            assert u["image_id"] == int(e["image"].split(".")[0]) == ids[e["image"]]
            # MPII files are 1-based (MATLAB); the unified file is 0-based like COCO
            np.testing.assert_allclose(kp21[vis, :2], np.array(e["joints"])[vis] - 1, atol=1e-4)


def test_visible_keypoints_lie_inside_the_image(data):
    for dataset in ("coco", "mpii"):
        content = _load(data.unified_val_file(dataset))
        sizes = {i["id"]: (i["width"], i["height"]) for i in content["images"]}
        for ann in content["annotations"]:
            kp = np.array(ann["keypoints"]).reshape(21, 3)
            w, h = sizes[ann["image_id"]]
            shown = kp[kp[:, 2] > 0, :2]
            assert np.all((shown >= 0) & (shown <= [w - 1, h - 1]))


def test_same_seed_gives_identical_files_other_seed_differs(tmp_path):
    small = SyntheticConfig(seed=3, coco_train=2, coco_val=1, mpii_train=2, mpii_val=1)
    first = _tree_bytes(generate_dataset(tmp_path / "a", small, progress=False).root)
    again = _tree_bytes(generate_dataset(tmp_path / "b", small, progress=False).root)
    assert first == again
    other = SyntheticConfig(seed=4, coco_train=2, coco_val=1, mpii_train=2, mpii_val=1)
    different = _tree_bytes(generate_dataset(tmp_path / "c", other, progress=False).root)
    assert different.keys() == first.keys()
    assert different["coco/images/train/000001.jpg"] != first["coco/images/train/000001.jpg"]
    assert different["coco/annotations/person_keypoints_train.json"] != \
        first["coco/annotations/person_keypoints_train.json"]


def test_an_image_does_not_depend_on_how_many_are_generated():
    few = SyntheticConfig(seed=3, coco_train=2)
    many = SyntheticConfig(seed=3, coco_train=500)
    image_few, labels_few = render_sample(few, "coco", "train", 1)
    image_many, labels_many = render_sample(many, "coco", "train", 1)
    np.testing.assert_array_equal(image_few, image_many)
    assert len(labels_few) == len(labels_many)


def _hue_deg(image: np.ndarray, xy: np.ndarray) -> float:
    x, y = np.round(xy).astype(int)
    pixel = image[y : y + 1, x : x + 1]
    return float(cv2.cvtColor(pixel, cv2.COLOR_BGR2HSV_FULL)[0, 0, 0]) * 360 / 256


def test_left_joints_are_warm_and_right_joints_cool():
    """The flip-distinguishing rule: a mirrored image would break it for every joint."""
    sided = [i for i, n in enumerate(UNIFIED.names) if n.startswith(("left_", "right_"))
             and n[n.index("_") + 1 :] not in ("ear",)]
    checked, wrong = 0, []
    for index in range(12):
        image, labels = render_sample(CONFIG, ("coco", "mpii")[index % 2], "train", index)
        for label in labels:
            for k in sided:
                if label.visibility[k] != 2:
                    continue
                hue = _hue_deg(image, label.keypoints[k])
                warm = hue <= 55 or hue >= 350
                checked += 1
                if warm != UNIFIED.names[k].startswith("left_"):
                    wrong.append((index, UNIFIED.names[k], round(hue)))
    assert checked > 100
    assert len(wrong) <= 0.02 * checked, wrong  # a few blurred images' discs may blend


def test_spine_joints_and_geometry():
    _, labels = render_sample(CONFIG, "mpii", "train", 0)
    j = {n: i for i, n in enumerate(UNIFIED.names)}
    for label in labels:
        kp = label.keypoints
        np.testing.assert_allclose(kp[j["pelvis"]], (kp[j["left_hip"]] + kp[j["right_hip"]]) / 2)
        torso = kp[j["thorax"]] - kp[j["pelvis"]]
        assert np.dot(kp[j["upper_neck"]] - kp[j["thorax"]], torso) > 0
        assert np.dot(kp[j["head_top"]] - kp[j["upper_neck"]], torso) > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(coco_train=-1), "coco_train"),
        (dict(image_size=(400, 300)), "image_size"),
        (dict(min_person_height=500), "min_person_height"),
        (dict(max_people=0), "max_people"),
        (dict(occluder_prob=1.5), "occluder_prob"),
        (dict(jpeg_quality=0), "jpeg_quality"),
    ],
)
def test_config_rejects_bad_values_with_the_field_name(change, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**change)


def test_make_dataset_job_writes_the_layout(tmp_path, capsys):
    path = REPO_ROOT / "jobs" / "make_dataset.py"
    spec = importlib.util.spec_from_file_location("make_dataset", path)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)  # nothing runs at import time
    assert not (tmp_path / "out").exists()
    data = job.main(["--out", str(tmp_path / "out"), "--seed", "1", "--coco-train", "2",
                     "--coco-val", "1", "--mpii-train", "1", "--mpii-val", "1"])
    assert len(_load(data.coco_train_ann)["images"]) == 2
    assert len(list(data.mpii_val_images.glob("*.jpg"))) == 1
    assert "wrote 5 images" in capsys.readouterr().out
