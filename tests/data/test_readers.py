import json
import shutil
import threading

import numpy as np
import pytest
from scipy.io import savemat

from unipose_ray.cli import InputError
from unipose_ray.data import formats
from unipose_ray.data.readers import AnnotationError, AnnotationFormatError, read_coco, read_mpii
from unipose_ray.data.records import read_records, records_to_table, table_to_records, write_records
from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import mapping_for


@pytest.fixture(scope="module")
def coco_files(real_samples):
    return real_samples / "coco" / "test_coco.json", real_samples / "coco"


@pytest.fixture(scope="module")
def mpii_files(real_samples):
    return real_samples / "mpii" / "test_mpii.json", real_samples / "mpii"


def _mmpose_dataset(cls_name, **kwargs):
    import_mmpose()
    import mmpose.datasets as datasets

    return getattr(datasets, cls_name)(test_mode=True, lazy_init=False, pipeline=[], **kwargs)


def test_coco_reader_matches_the_json_and_mmpose(coco_files):
    ann_file, img_dir = coco_files
    records = read_coco(ann_file, img_dir)
    raw = json.loads(ann_file.read_text())
    kept = [a for a in raw["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    assert sorted(r.instance_id for r in records) == sorted(a["id"] for a in kept)

    by_id = {a["id"]: a for a in kept}
    for record in records:
        ann = np.asarray(by_id[record.instance_id]["keypoints"], dtype=np.float32).reshape(17, 3)
        np.testing.assert_array_equal(record.keypoints[:17], ann[:, :2])
        np.testing.assert_array_equal(record.visible[:17], np.minimum(ann[:, 2], 1))
        assert not record.annotated[17:].any() and record.annotated[:17].all()
        assert record.head_size is None

    mm = _mmpose_dataset("CocoDataset", ann_file=str(ann_file), data_root=str(img_dir),
                         data_prefix=dict(img=""))
    assert len(mm) == len(records)
    for i, record in enumerate(records):
        info = mm.get_data_info(i)
        assert info["id"] == record.instance_id
        x1, y1, x2, y2 = info["bbox"][0]
        np.testing.assert_allclose(record.bbox, [x1, y1, x2 - x1, y2 - y1], rtol=1e-6)


def test_mpii_reader_matches_mmpose(mpii_files):
    ann_file, img_dir = mpii_files
    records = read_mpii(ann_file, img_dir)
    raw = json.loads(ann_file.read_text())
    assert len(records) == len(raw)
    mapping = mapping_for("mpii")
    mm = _mmpose_dataset("MpiiDataset", ann_file=str(ann_file), data_root=str(img_dir),
                         data_prefix=dict(img=""))
    for i, record in enumerate(records):
        info = mm.get_data_info(i)
        # MMPose keeps MPII's 1-based joints; records are 0-based like the crop grid.
        np.testing.assert_array_equal(mapping.keypoints_from_unified(record.keypoints) + 1,
                                      info["keypoints"][0])
        np.testing.assert_array_equal(mapping.keypoints_from_unified(record.visible),
                                      info["keypoints_visible"][0])
        x1, y1, x2, y2 = info["bbox"][0]
        np.testing.assert_allclose(record.bbox, [x1, y1, x2 - x1, y2 - y1], rtol=1e-5)
        assert record.image_id == info["img_id"]
        assert not record.annotated[:5].any()


def test_mpii_head_sizes_from_field_and_from_mat(mpii_files, tmp_path):
    ann_file, img_dir = mpii_files
    raw = json.loads(ann_file.read_text())
    boxes = np.random.default_rng(0).uniform(0, 300, (len(raw), 4))
    boxes[:, 2:] = boxes[:, :2] + 40
    with_field = [{**a, "head_box": b.tolist()} for a, b in zip(raw, boxes, strict=True)]
    (tmp_path / "with_box.json").write_text(json.dumps(with_field))
    from_field = read_mpii(tmp_path / "with_box.json", img_dir)
    expected = 0.6 * np.linalg.norm(boxes[:, 2:] - boxes[:, :2], axis=1)
    np.testing.assert_allclose([r.head_size for r in from_field], expected, rtol=1e-6)

    # The official layout: headboxes_src of shape (2, 2, N), [[x1, y1], [x2, y2]] per instance.
    savemat(tmp_path / "gt.mat", {"headboxes_src": boxes.reshape(-1, 2, 2).transpose(1, 2, 0)})
    from_mat = read_mpii(ann_file, img_dir, headbox_file=tmp_path / "gt.mat")
    np.testing.assert_allclose([r.head_size for r in from_mat], expected, rtol=1e-6)

    savemat(tmp_path / "short.mat", {"headboxes_src": boxes[:2].reshape(-1, 2, 2).transpose(1, 2, 0)})
    with pytest.raises(AnnotationError, match="2 head boxes"):
        read_mpii(ann_file, img_dir, headbox_file=tmp_path / "short.mat")


def test_records_round_trip_through_parquet(coco_files, mpii_files, tmp_path):
    records = read_coco(*coco_files) + read_mpii(*mpii_files)
    path = write_records(records, tmp_path / "records.parquet")
    back = table_to_records(read_records(path))
    assert len(back) == len(records)
    for a, b in zip(records, back, strict=True):
        assert (a.image_path, a.dataset, a.instance_id, a.head_size) == (
            b.image_path, b.dataset, b.instance_id, b.head_size)
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.annotated, b.annotated)
        np.testing.assert_array_equal(a.weights, b.weights)


def test_bad_coco_files_name_the_file_and_the_problem(coco_files, tmp_path):
    ann_file, img_dir = coco_files
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_coco(tmp_path / "nope.json", img_dir)
    with pytest.raises(FileNotFoundError, match="image folder"):
        read_coco(ann_file, tmp_path / "missing_dir")

    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(AnnotationError, match="broken.json is not valid JSON"):
        read_coco(broken, img_dir)

    raw = json.loads(ann_file.read_text())
    no_images = tmp_path / "no_images.json"
    no_images.write_text(json.dumps({k: v for k, v in raw.items() if k != "images"}))
    with pytest.raises(AnnotationError, match="missing the 'images'"):
        read_coco(no_images, img_dir)

    short = dict(raw, annotations=[dict(raw["annotations"][0], keypoints=[1, 2, 2] * 16)])
    (tmp_path / "short.json").write_text(json.dumps(short))
    with pytest.raises(AnnotationError, match="has 16 keypoints"):
        read_coco(tmp_path / "short.json", img_dir)

    # An image the annotations need is missing from the folder.
    partial = tmp_path / "images"
    partial.mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist; check the image folder"):
        read_coco(ann_file, partial)


def test_bad_mpii_files_name_the_file_and_the_problem(mpii_files, tmp_path):
    ann_file, img_dir = mpii_files
    raw = json.loads(ann_file.read_text())
    (tmp_path / "obj.json").write_text(json.dumps({"annotations": raw}))
    with pytest.raises(AnnotationError, match="obj.json looks like a COCO annotation file"):
        read_mpii(tmp_path / "obj.json", img_dir)
    (tmp_path / "nojoints.json").write_text(json.dumps([{k: v for k, v in raw[0].items() if k != "joints"}]))
    with pytest.raises(AnnotationError, match=r"annotation 0 lacks \['joints'\]"):
        read_mpii(tmp_path / "nojoints.json", img_dir)
    (tmp_path / "shape.json").write_text(json.dumps([dict(raw[0], joints=raw[0]["joints"][:15])]))
    with pytest.raises(AnnotationError, match="needs"):
        read_mpii(tmp_path / "shape.json", img_dir)
    shutil.copy(img_dir / raw[0]["image"], tmp_path / "corrupt.jpg")
    (tmp_path / "corrupt.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "corrupt.json").write_text(json.dumps([dict(raw[0], image="corrupt.jpg")]))
    with pytest.raises(AnnotationError, match="cannot be read"):
        read_mpii(tmp_path / "corrupt.json", tmp_path)


def test_a_file_of_another_format_says_what_it_looks_like(coco_files, mpii_files, real_samples,
                                                          tmp_path):
    (coco_ann, coco_dir), (mpii_ann, mpii_dir) = coco_files, mpii_files
    dets = real_samples / "coco" / "test_coco_det_AP_H_56.json"
    savemat(tmp_path / "mpii_gt_val.mat", {"headboxes_src": np.zeros((2, 2, 1))})
    (tmp_path / "empty.json").write_text("")
    cases = [
        (read_coco, mpii_ann, coco_dir, "looks like an MPII annotation list (MMPose's "
         "mpii_*.json), not a COCO person-keypoints file: give it as data.mpii_*.ann_file, or "
         "pass person_keypoints_*.json instead"),
        (read_mpii, coco_ann, mpii_dir, "looks like a COCO annotation file (a JSON object with "
         "images/annotations/categories), not an MPII annotation list (MMPose's mpii_*.json): "
         "give it as data.coco_*.ann_file, or pass MMPose's mpii_*.json instead"),
        (read_coco, dets, coco_dir, "looks like a COCO results file (a JSON list of detections "
         "or predictions, {image_id, bbox, score}), not a COCO person-keypoints file: give it "
         "as data.coco_val.bbox_file"),
        (read_mpii, dets, mpii_dir, "not an MPII annotation list"),
        (read_coco, tmp_path / "mpii_gt_val.mat", coco_dir, "looks like a MATLAB .mat file"),
        (read_mpii, tmp_path / "mpii_gt_val.mat", mpii_dir, "if it is mpii_gt_val.mat (head "
         "boxes), give it as data.mpii_val.headbox_file"),
        (read_coco, tmp_path / "empty.json", coco_dir, "is empty, not a COCO person-keypoints "
         "file: a download or copy cut short? Fetch it again"),
        (read_mpii, tmp_path / "empty.json", mpii_dir, "is empty, not an MPII annotation list"),
    ]
    for read, ann_file, img_dir, says in cases:
        with pytest.raises(AnnotationFormatError) as error:
            read(ann_file, img_dir)
        assert str(error.value).startswith(f"{ann_file} ") and says in str(error.value)
        assert isinstance(error.value, InputError)  # a job prints it as one line, exit code 2

    with pytest.raises(AnnotationFormatError, match="test_mpii.json looks like an MPII "
                                                    "annotation list .* not MPII's mpii_gt_val"):
        read_mpii(mpii_ann, mpii_dir, headbox_file=mpii_ann)
    with pytest.raises(AnnotationFormatError, match="empty.json is empty, not MPII's mpii_gt_val"):
        read_mpii(mpii_ann, mpii_dir, headbox_file=tmp_path / "empty.json")


def test_a_valid_file_is_parsed_once_and_never_sniffed(coco_files, mpii_files, monkeypatch):
    def sniff(path):
        raise AssertionError(f"{path} read a second time")

    monkeypatch.setattr(formats, "annotation_format", sniff)
    assert read_coco(*coco_files) and read_mpii(*mpii_files)


def test_concurrent_writers_never_leave_a_half_written_record_file(coco_files, mpii_files, tmp_path):
    table = records_to_table((read_coco(*coco_files) + read_mpii(*mpii_files)) * 50)
    path = tmp_path / "train_coco_mpii.parquet"
    write_records(table, path)
    stop, errors = threading.Event(), []

    def write_again():
        while not stop.is_set():
            write_records(table, path)

    writers = [threading.Thread(target=write_again) for _ in range(2)]
    for w in writers:
        w.start()
    try:
        for _ in range(30):  # as the second student's run does while the first one writes
            try:
                assert read_records(path).num_rows == table.num_rows
            except Exception as e:  # noqa: BLE001
                errors.append(e)
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert not errors, errors[0]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial files left
