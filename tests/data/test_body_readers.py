"""The AIC, CrowdPose and Halpe readers against MMPose's own dataset classes.

Every file here is written in the format people hold (MMPose's converted COCO-style files,
AI Challenger's raw list, Halpe-FullBody's 136-joint file), with small JPEGs; the records
are compared instance by instance with ``AicDataset``, ``CrowdPoseDataset`` and
``HalpeDataset`` built on the same file (test mode, top-down), through the skeleton's
index maps.
"""

import json
import os
import re

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile

from unipose_ray.data import formats
from unipose_ray.data.aic import read_aic
from unipose_ray.data.readers import AnnotationError, AnnotationFormatError, read_coco, read_mpii
from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import CROWDPOSE, HALPE26, UNIFIED, mapping_for, unified_skeleton

SKELETON_27 = unified_skeleton(["coco", "mpii", "halpe26"])
FEET = [n for n in HALPE26.names if n.endswith(("toe", "heel"))]
AIC_CATEGORY = {  # as in MMPose's aic_*.json
    "supercategory": "person", "id": 1, "name": "person",
    "keypoints": ["Right Shoulder", "Right Elbow", "Right Wrist", "Left Shoulder", "Left Elbow",
                  "Left Wrist", "Right Hip", "Right Knee", "Right Ankle", "Left Hip",
                  "Left Knee", "Left Ankle", "Head top", "Neck"],
    "skeleton": [[3, 2], [2, 1], [1, 14], [14, 4], [4, 5], [5, 6], [9, 8], [8, 7], [7, 10],
                 [10, 11], [11, 12], [13, 14], [1, 7], [4, 10]],
}


def _write_image(path, width, height, orientation=None):
    """A small JPEG that looks like a photo (gradients and a figure); ``orientation``: the
    EXIF orientation tag (6: shown turned by 90 degrees)."""
    x, y = np.meshgrid(np.linspace(40, 220, width), np.linspace(200, 60, height))
    pixels = np.stack([x, y, (x + y) / 2], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    draw.ellipse([width * 0.4, height * 0.1, width * 0.55, height * 0.3], fill=(230, 190, 160))
    draw.rectangle([width * 0.35, height * 0.3, width * 0.6, height * 0.9], fill=(40, 60, 120))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(path, quality=85, exif=exif)


def _loaded_size(path):
    """``(width, height)`` as MMPose and the crop pipeline load the image (cv2)."""
    height, width = cv2.imread(str(path), cv2.IMREAD_COLOR).shape[:2]
    return width, height


def _joints(rng, box, k, unlabelled=0.25):
    """``(k, 2)`` integer points in ``box`` (x1, y1, x2, y2) and which are labelled."""
    x1, y1, x2, y2 = box
    xy = np.column_stack([rng.integers(int(x1), int(x2), k), rng.integers(int(y1), int(y2), k)])
    return xy, rng.random(k) > unlabelled


def _mmpose_dataset(cls_name, **kwargs):
    import_mmpose()
    import mmpose.datasets as datasets

    return getattr(datasets, cls_name)(test_mode=True, lazy_init=False, pipeline=[], **kwargs)


def _mmpose_on(cls_name, ann_file, img_dir, **kwargs):
    return _mmpose_dataset(cls_name, ann_file=str(ann_file), data_root=str(img_dir),
                           data_prefix=dict(img=""), **kwargs)


def _assert_matches_mmpose(records, mm, dataset, skeleton=UNIFIED):
    """Each record is MMPose's data info of the same index, mapped through the skeleton
    (MMPose's first K joints: Halpe-FullBody's body joints)."""
    mapping = mapping_for(dataset, skeleton)
    k = mapping.source.num_keypoints
    assert len(mm) == len(records) > 0
    for i, record in enumerate(records):
        info = mm.get_data_info(i)
        assert (info["id"], info["img_id"]) == (record.instance_id, record.image_id)
        assert os.path.realpath(info["img_path"]) == os.path.realpath(record.image_path)
        np.testing.assert_array_equal(mapping.keypoints_from_unified(record.keypoints),
                                      info["keypoints"][0][:k])
        np.testing.assert_array_equal(mapping.keypoints_from_unified(record.visible),
                                      info["keypoints_visible"][0][:k])
        assert record.annotated.tolist() == mapping.annotated.tolist()
        assert not record.keypoints[~mapping.annotated].any()
        assert not record.visible[~mapping.annotated].any()
        x1, y1, x2, y2 = info["bbox"][0]
        np.testing.assert_allclose(record.bbox, [x1, y1, x2 - x1, y2 - y1], rtol=1e-6)
        assert np.float32(record.area) == np.float32(info["area"])
        assert record.dataset == dataset and record.head_size is None


# --- AIC ------------------------------------------------------------------------------------

def _raw_aic(rng):
    """AI Challenger's list: (image_id, stored size, EXIF orientation, people), people as
    ``name: (joints [x, y, v] * 14, box [x1, y1, x2, y2])``."""
    def person(box, all_unlabelled=False, stray=False):
        x1, y1, x2, y2 = box
        xy, labelled = _joints(rng, (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)), 14)
        labelled &= not all_unlabelled
        labelled[0] &= not stray
        v = np.where(labelled, rng.choice([1, 2], 14), 3)
        xy = np.where(labelled[:, None] | stray, xy, 0)  # AI Challenger writes 0, 0, 3
        return np.column_stack([xy, v]).ravel().tolist(), list(box)

    return [
        ("054d9ce9201beffc76e5ff2169d2af2f027002ca", (900, 600), None, {
            "human1": person((279, 55, 492, 599)),
            "human2": person((541, 131, 950, 640)),  # past the right and bottom edges
            "human3": person((88, 7, 340, 599), all_unlabelled=True),  # no labelled joint
            "human4": ([0, 0, 1] * 14, [10, 10, 50, 80]),  # no joint off the origin
        }),
        ("fa436c914fe4a8ec1ec5474af4d3820b84d17561", (400, 640), 6, {  # loads as 640 x 400
            "human1": person((36, 26, 350, 380)),
            "human2": person((330, 390, 120, 40)),  # corners given as (x2, y2, x1, y1)
            "human3": person((200, 50, 420, 390), stray=True),  # a point on a v = 3 joint
        }),
        ("ff945ae2e729f24eea992814639d59b3bdec8bd8", (500, 333), None, {
            "human1": person((20, 10, 260, 320)),
            "human2": ([520, 40, 1] * 14, [510, 10, 560, 90]),  # box off the image: empty
        }),
        ("0e2b7e6c5d0f86ad6c3e1b9ab8a2e0f7d1c2a3b4", (320, 240), None, {}),  # nobody
    ]


@pytest.fixture(scope="module")
def aic_files(tmp_path_factory):
    """(raw file, MMPose's COCO-style conversion of it, image folder)."""
    folder = tmp_path_factory.mktemp("aic")
    images = folder / "keypoint_validation_images_20170911"
    images.mkdir()
    raw, coco = [], {"info": {"description": "AIC keypoints, MMPose's COCO-style file"},
                     "licenses": [], "categories": [AIC_CATEGORY], "images": [],
                     "annotations": []}
    person_id = 0
    for index, (image_id, (width, height), orientation, people) in enumerate(_raw_aic(
            np.random.default_rng(0))):
        if people:  # an image nobody is annotated in need not be there
            _write_image(images / f"{image_id}.jpg", width, height, orientation)
        raw.append({"url": f"http://www.sinaimg.cn/dy/slidenews/{index}.jpg",
                    "image_id": image_id,
                    "keypoint_annotations": {n: p for n, (p, _) in people.items()},
                    "human_annotations": {n: b for n, (_, b) in people.items()}})
        # MMPose's conversion: v 1/2/3 -> 2/1/0 (its files hold 0, 0, 0 for an unlabelled
        # joint), corners -> x, y, w, h, sizes as loaded
        loaded = _loaded_size(images / f"{image_id}.jpg") if people else (width, height)
        coco["images"].append({"url": raw[-1]["url"], "file_name": f"{image_id}.jpg",
                               "width": loaded[0], "height": loaded[1], "id": index + 1})
        for points, (x1, y1, x2, y2) in people.values():
            person_id += 1
            p = np.reshape(points, (14, 3))
            v = np.select([p[:, 2] == 1, p[:, 2] == 2], [2, 1], 0)
            (x1, x2), (y1, y2) = sorted((x1, x2)), sorted((y1, y2))
            coco["annotations"].append({
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "keypoints": np.column_stack([p[:, :2] * (v[:, None] > 0), v]).ravel().tolist(),
                "num_keypoints": int(np.count_nonzero(v)), "image_id": index + 1,
                "category_id": 1, "id": person_id})
    (folder / "keypoint_validation_annotations_20170911.json").write_text(json.dumps(raw))
    (folder / "aic_val.json").write_text(json.dumps(coco, indent=4))
    return (folder / "keypoint_validation_annotations_20170911.json", folder / "aic_val.json",
            images)


def test_raw_aic_matches_aic_dataset_on_its_coco_conversion(aic_files):
    raw_file, coco_file, images = aic_files
    records = read_aic(raw_file, images)
    _assert_matches_mmpose(records, _mmpose_on("AicDataset", coco_file, images), "aic")
    # The people dropped: no labelled joint (image 1, human3), all at the origin (human4),
    # a box off the image (image 3, human2).
    assert [(r.image_id, r.instance_id) for r in records] == [(1, 1), (1, 2), (2, 5), (2, 6),
                                                              (2, 7), (3, 8)]
    for record in records:  # sizes as the image loads (EXIF-turned), read from the header
        assert (record.image_width, record.image_height) == _loaded_size(record.image_path)


def test_both_aic_forms_give_the_same_records(aic_files):
    raw_file, coco_file, images = aic_files
    from_raw, from_coco = read_aic(raw_file, images), read_aic(coco_file, images)
    assert len(from_raw) == len(from_coco)
    for a, b in zip(from_raw, from_coco, strict=True):
        assert (a.image_path, a.image_id, a.instance_id, a.image_width, a.image_height,
                a.dataset) == (b.image_path, b.image_id, b.instance_id, b.image_width,
                               b.image_height, b.dataset)
        for field in ("bbox", "keypoints", "visible", "annotated"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
        assert np.float32(a.area) == np.float32(b.area)
    # read_coco takes the COCO-style form as well, not the raw one.
    assert len(read_coco(coco_file, images, dataset="aic")) == len(from_coco)
    with pytest.raises(AnnotationFormatError, match="looks like an AI Challenger annotation "
                                                    "list .*, not a COCO-style file: read AI "
                                                    "Challenger's list with unipose_ray.data."
                                                    "aic.read_aic"):
        read_coco(raw_file, images, dataset="aic")


def test_raw_aic_reads_image_headers_only(aic_files, monkeypatch):
    raw_file, _, images = aic_files

    def decode(self):
        raise AssertionError(f"{self.filename} decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
    assert read_aic(raw_file, images)


def test_aic_files_are_parsed_once_and_never_sniffed(aic_files, monkeypatch):
    raw_file, coco_file, images = aic_files

    def sniff(path):
        raise AssertionError(f"{path} read a second time")

    monkeypatch.setattr(formats, "annotation_format", sniff)
    assert read_aic(raw_file, images) and read_aic(coco_file, images)


def test_an_empty_raw_aic_list_has_no_records(tmp_path):
    (tmp_path / "empty.json").write_text("[]")
    assert read_aic(tmp_path / "empty.json", tmp_path) == []


def _broken(raw, change):
    raw = json.loads(json.dumps(raw))
    change(raw)
    return raw


def _set(path, value):
    def change(raw):
        *keys, last = path
        target = raw
        for key in keys:
            target = target[key]
        target[last] = value
    return change


@pytest.mark.parametrize(("change", "says"), [
    (lambda raw: raw[1].pop("keypoint_annotations"),
     r"image fa436c914fe4a8ec1ec5474af4d3820b84d17561 lacks \['keypoint_annotations'\]"),
    (lambda raw: raw[0]["human_annotations"].pop("human2"),
     "image 054d9ce9201beffc76e5ff2169d2af2f027002ca: human2 in keypoint_annotations has no "
     "box in human_annotations"),
    (lambda raw: raw[1]["keypoint_annotations"]["human1"].pop(),
     r"image fa436c914fe4a8ec1ec5474af4d3820b84d17561, human1's keypoint_annotations "
     r"\(\[x, y, v\] per joint\) must be 42 numbers, found .* \(41 values\)"),
    (_set([2, "keypoint_annotations", "human1", 4], "12"),
     "human1's keypoint_annotations .* must be 42 numbers, found .*\"12\""),
    (_set([2, "keypoint_annotations", "human1", 0], None),
     "human1's keypoint_annotations .* must be 42 numbers, found \\[null"),
    (_set([0, "human_annotations", "human1"], [279, 55, 492]),
     r"human1's human_annotations box \(\[x1, y1, x2, y2\]\) must be 4 numbers"),
    (_set([0, "keypoint_annotations", "human2", 5], 0),
     "human2's keypoint_annotations visibility of joint 1 is 0; AI Challenger's are 1 "
     r"\(visible\), 2 \(occluded\), 3 \(not labelled\)"),
    (_set([1, "image_id"], 42), "entry 1's image_id must be the image's file name"),
    (_set([1, "keypoint_annotations"], [[1, 2, 3]]),
     "keypoint_annotations must map human names to lists, found list"),
])
def test_a_malformed_raw_aic_file_names_the_file_and_field(aic_files, tmp_path, change, says):
    raw_file, _, images = aic_files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_broken(json.loads(raw_file.read_text()), change)))
    with pytest.raises(AnnotationError, match=f"^{re.escape(str(bad))}: .*{says}"):
        read_aic(bad, images)


def test_raw_aic_images_missing_or_corrupt_are_named(aic_files, tmp_path):
    raw_file, _, images = aic_files
    raw = json.loads(raw_file.read_text())
    with pytest.raises(FileNotFoundError, match=f"{raw[0]['image_id']}.jpg, which does not "
                                                "exist; check the image folder"):
        read_aic(raw_file, tmp_path)
    for entry in raw:
        if entry["keypoint_annotations"]:
            (tmp_path / f"{entry['image_id']}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(AnnotationError, match="cannot be read"):
        read_aic(raw_file, tmp_path)


def test_a_file_of_another_format_given_as_aic_says_what_it_is(aic_files, real_samples):
    raw_file, _, images = aic_files
    mpii = real_samples / "mpii" / "test_mpii.json"
    with pytest.raises(AnnotationFormatError) as error:
        read_aic(mpii, images)
    assert str(error.value) == (
        f"{mpii} looks like an MPII annotation list (MMPose's mpii_*.json), not an AIC "
        "annotation file (MMPose's COCO-style aic_*.json or AI Challenger's "
        "keypoint_*_annotations_*.json): give it as data.mpii_*.ann_file, or pass MMPose's "
        "aic_*.json or AI Challenger's keypoint_*_annotations_*.json instead")
    for read in (read_coco, read_mpii):
        with pytest.raises(AnnotationFormatError, match="looks like an AI Challenger "
                                                        "annotation list .* give it as "
                                                        r"data\.aic_\*\.ann_file"):
            read(raw_file, images)


# --- CrowdPose ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crowdpose_files(tmp_path_factory):
    """``mmpose_crowdpose_test.json`` as MMPose's CrowdPose files are: COCO-style, 14
    joints, ``crowdIndex`` per image, no ``area``."""
    folder = tmp_path_factory.mktemp("crowdpose")
    rng = np.random.default_rng(1)
    images = [(106848, 640, 425, 0.33), (103319, 640, 480, 0.39)]
    for image_id, width, height, _ in images:
        _write_image(folder / f"{image_id}.jpg", width, height)
    boxes = [(106848, (106.01, 13.43, 273.15, 352.42), 0),
             (106848, (108.5, 96.78, 35.46, 30.23), 0),
             (106848, (281.51, 21.92, 400.5, 349.72), 0),  # past the right edge
             (103319, (316.76, 157.3, 100.54, 247.56), 0),
             (103319, (279.68, 102.17, 81.13, 255.49), 1)]  # a crowd
    annotations = []
    for n, (image_id, (x, y, w, h), crowd) in enumerate(boxes):
        xy, labelled = _joints(rng, (x, y, min(x + w, 639), y + h), 14)
        if n == 1:
            labelled[:] = False  # num_keypoints 0: dropped
        v = np.where(labelled, rng.choice([1, 2], 14), 0)
        annotations.append({
            "num_keypoints": int(labelled.sum()), "iscrowd": crowd,
            "keypoints": np.column_stack([xy * labelled[:, None], v]).ravel().tolist(),
            "image_id": image_id, "bbox": [x, y, w, h], "category_id": 1, "id": 123803 + n})
    content = {
        "categories": [{"supercategory": "person", "id": 1, "name": "person",
                        "keypoints": [*CROWDPOSE.names[:12], "head", "neck"], "skeleton": []}],
        "images": [{"file_name": f"{i}.jpg", "id": i, "height": h, "width": w, "crowdIndex": c}
                   for i, w, h, c in images],
        "annotations": annotations,
    }
    (folder / "mmpose_crowdpose_test.json").write_text(json.dumps(content, indent=4))
    return folder / "mmpose_crowdpose_test.json", folder


def test_crowdpose_matches_crowdpose_dataset(crowdpose_files):
    ann_file, folder = crowdpose_files
    records = read_coco(ann_file, folder, dataset="crowdpose")
    _assert_matches_mmpose(records, _mmpose_on("CrowdPoseDataset", ann_file, folder),
                           "crowdpose")
    raw = json.loads(ann_file.read_text())["annotations"]
    assert len(records) == sum(a["num_keypoints"] > 0 and not a["iscrowd"] for a in raw)


# --- Halpe ----------------------------------------------------------------------------------

def _halpe_keypoints(rng, box, joints, body_labelled=True, flagged=True):
    """Halpe-FullBody's list: 26 body joints, then face and hands (their points set, with
    ``v`` 0 on the face as Halpe's files have them). ``flagged=False``: points, no flags."""
    xy, labelled = _joints(rng, box, joints)
    labelled[:26] &= body_labelled
    v = np.where(labelled, rng.choice([1, 2], joints), 0) * flagged
    v[26:94] = 0  # the face: points without a visibility flag
    xy[:26] *= labelled[:26, None]
    return np.column_stack([xy, v]).ravel().tolist()


@pytest.fixture(scope="module")
def halpe_files(tmp_path_factory):
    """``halpe_val_v1.json`` (136 joints a person, COCO val2017 images) and a 26-joint
    COCO-style file of the same people, some without ``num_keypoints``, ``area``,
    ``iscrowd``; one image folder."""
    folder = tmp_path_factory.mktemp("halpe")
    images = [(785, 640, 425), (40083, 500, 333)]
    for image_id, width, height in images:
        _write_image(folder / f"{image_id:012d}.jpg", width, height)
    people = [(785, (280.79, 44.73, 218.7, 346.68), {"area": 27789.11, "num_keypoints": 17}),
              (785, (50.0, 100.0, 120.0, 300.0), {}),  # no num_keypoints, area, iscrowd
              (40083, (20.0, 30.0, 200.0, 280.0), {"num_keypoints": 0}),  # dropped
              (40083, (300.0, 40.0, 250.0, 290.0), {"iscrowd": 0}),  # past the right edge
              (40083, (150.0, 60.0, 100.0, 200.0), {"no_body": True}),  # face and hands only
              (40083, (80.0, 20.0, 150.0, 300.0), {"no_flags": True})]  # points, all v 0
    files = {}
    for joints in (136, 26):
        annotations = []
        for n, (image_id, (x, y, w, h), extra) in enumerate(people):
            extra = dict(extra)
            body, flagged = not extra.pop("no_body", False), not extra.pop("no_flags", False)
            keypoints = _halpe_keypoints(np.random.default_rng(n), (x, y, min(x + w, 499),
                                                                    y + h), 136, body, flagged)
            annotations.append({**extra, "keypoints": keypoints[:3 * joints],
                                "image_id": image_id, "bbox": [x, y, w, h], "category_id": 1,
                                "id": 442619 + n})
        content = {
            "categories": [{"supercategory": "person", "id": 1, "name": "person",
                            "keypoints": [], "skeleton": []}],
            "images": [{"license": 4, "file_name": f"{i:012d}.jpg", "height": h, "width": w,
                        "id": i} for i, w, h in images],
            "annotations": annotations,
        }
        files[joints] = folder / ("halpe_val_v1.json" if joints == 136 else "halpe26_val.json")
        files[joints].write_text(json.dumps(content))
    return files, folder


def test_halpe_fullbody_matches_halpe_dataset_first_26_joints(halpe_files):
    files, folder = halpe_files
    records = read_coco(files[136], folder, dataset="halpe26", skeleton=SKELETON_27)
    mm = _mmpose_on("HalpeDataset", files[136], folder)
    assert mm.metainfo["num_keypoints"] == 136
    _assert_matches_mmpose(records, mm, "halpe26", SKELETON_27)
    # As HalpeDataset: a person is judged on all 136 joints, kept with its hands alone, and
    # without num_keypoints on its points (one with points but no flag is kept).
    kept = {r.instance_id: r for r in records}
    assert 442619 + 4 in kept and not kept[442619 + 5].visible.any()


def test_halpe26_files_match_halpe_dataset_with_halpe26_joints(halpe_files):
    files, folder = halpe_files
    records = read_coco(files[26], folder, dataset="halpe26", skeleton=SKELETON_27)
    mm = _mmpose_on("HalpeDataset", files[26], folder,
                    metainfo=dict(from_file="configs/_base_/datasets/halpe26.py"))
    _assert_matches_mmpose(records, mm, "halpe26", SKELETON_27)


def test_feet_come_from_halpe_and_are_unannotated_for_coco(halpe_files, real_samples):
    files, folder = halpe_files
    assert SKELETON_27.num_keypoints == 27 and set(FEET) <= set(SKELETON_27.names)
    feet = [SKELETON_27.index(n) for n in FEET]
    halpe = read_coco(files[136], folder, dataset="halpe26", skeleton=SKELETON_27)
    mm = _mmpose_on("HalpeDataset", files[136], folder)
    name2id = mm.metainfo["keypoint_name2id"]
    for i, record in enumerate(halpe):
        info = mm.get_data_info(i)
        assert record.annotated[feet].all()
        np.testing.assert_array_equal(record.keypoints[feet],
                                      info["keypoints"][0][[name2id[n] for n in FEET]])
    assert any(r.visible[feet].any() for r in halpe)

    coco = read_coco(real_samples / "coco" / "test_coco.json", real_samples / "coco",
                     skeleton=SKELETON_27)
    mpii = read_mpii(real_samples / "mpii" / "test_mpii.json", real_samples / "mpii",
                     skeleton=SKELETON_27)
    for record in coco + mpii:
        assert len(record.visible) == 27
        assert not record.annotated[feet].any() and not record.weights[feet].any()
        assert not record.keypoints[feet].any()
    # The 21 joints they share sit in the same slots as with the paper's skeleton.
    shared = [SKELETON_27.index(n) for n in UNIFIED.names]
    for a, b in zip(coco, read_coco(real_samples / "coco" / "test_coco.json",
                                    real_samples / "coco"), strict=True):
        np.testing.assert_array_equal(a.keypoints[shared], b.keypoints)
        np.testing.assert_array_equal(a.bbox, b.bbox)

    with pytest.raises(ValueError, match="left_big_toe"):  # the 21 joints have no feet
        read_coco(files[136], folder, dataset="halpe26")


@pytest.mark.parametrize(("dataset", "joints", "says"), [
    ("halpe26", 30, "has 30 keypoints, but the 'halpe26' keypoint set has 26 (Halpe-FullBody "
                    "files: 136); pass the matching dataset name"),
    ("crowdpose", 17, "has 17 keypoints, but the 'crowdpose' keypoint set has 14; files of "
                      "coco hold 17: pass"),
    ("coco", 14, "has 14 keypoints, but the 'coco' keypoint set has 17; files of aic, "
                 "crowdpose hold 14: pass"),
    ("aic", 136, "has 136 keypoints, but the 'aic' keypoint set has 14; files of halpe26 hold "
                 "136: pass"),
])
def test_a_wrong_joint_count_names_file_annotation_and_counts(halpe_files, tmp_path, dataset,
                                                             joints, says):
    files, folder = halpe_files
    content = json.loads(files[136].read_text())
    ann = content["annotations"][3]
    content["annotations"] = [dict(ann, keypoints=(ann["keypoints"] * 2)[:3 * joints])]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    with pytest.raises(AnnotationError, match=f"^{re.escape(str(bad))}: annotation {ann['id']} "
                                              f"{re.escape(says)}"):
        read_coco(bad, folder, dataset=dataset, skeleton=SKELETON_27)


@pytest.mark.parametrize(("field", "value", "says"), [
    ("keypoints", ["12", 3, 2] * 14, r"'keypoints' must be a list of numbers \[x1, y1, v1, "
                                     r"\.\.\.\], found \[\"12\""),
    ("keypoints", [[1, 2, 2]] * 14, "'keypoints' must be a list of numbers"),
    ("bbox", [300.0, 40.0, 250.0], r"'bbox' \(\[x, y, w, h\]\) must be 4 numbers, found "
                                   r"\[300.0, 40.0, 250.0\] \(3 values\)"),
    ("bbox", [300.0, None, 250.0, 2.0], r"'bbox' .* must be 4 numbers, found \[300.0, null"),
])
def test_a_non_numeric_coco_field_is_named(crowdpose_files, tmp_path, field, value, says):
    ann_file, folder = crowdpose_files
    content = json.loads(ann_file.read_text())
    content["annotations"][3][field] = value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    with pytest.raises(AnnotationError, match=f"^{re.escape(str(bad))}: annotation "
                                              f"{content['annotations'][3]['id']} {says}"):
        read_coco(bad, folder, dataset="crowdpose")
