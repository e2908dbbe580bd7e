import numpy as np
import pytest

from unipose_ray.skeleton import (
    AIC,
    COCO,
    CROWDPOSE,
    DATASET_SETS,
    HALPE26,
    MPII,
    NAME_MAPS,
    UNANNOTATED,
    UNIFIED,
    KeypointSet,
    build_mapping,
    keypoint_set_named,
    mapping_for,
    skeleton_from_names,
    unified_skeleton,
)


def test_unified_order_is_coco_then_spine_and_head():
    assert UNIFIED.names[:17] == COCO.names
    assert UNIFIED.names[17:] == ("pelvis", "thorax", "upper_neck", "head_top")
    assert UNIFIED.flip_pairs == tuple((i, i + 1) for i in range(1, 17, 2))


ALL = unified_skeleton(DATASET_SETS)


@pytest.mark.parametrize("dataset", [*DATASET_SETS, "unified"])
def test_mapping_round_trips(dataset):
    mapping = mapping_for(dataset, ALL)
    k = mapping.source.num_keypoints
    values = np.random.default_rng(0).random((3, k, 2))
    unified = mapping.keypoints_to_unified(values, fill=np.nan)
    assert unified.shape == (3, ALL.num_keypoints, 2)
    np.testing.assert_array_equal(mapping.keypoints_from_unified(unified), values)
    # Exactly the unannotated unified slots are left at the fill value.
    np.testing.assert_array_equal(np.isnan(unified[0, :, 0]), ~mapping.annotated)
    # Both index maps agree.
    name_map = NAME_MAPS.get(dataset, {n: n for n in ALL.names})
    for src, uni in enumerate(mapping.to_unified):
        assert mapping.from_unified[uni] == src
        assert ALL.names[uni] == name_map[mapping.source.names[src]]


def test_mpii_mapping_matches_the_papers_table():
    # MPII index -> unified index, as the paper authors' code maps them
    expected = [16, 14, 12, 11, 13, 15, 17, 18, 19, 20, 10, 8, 6, 5, 7, 9]
    np.testing.assert_array_equal(mapping_for("mpii").to_unified, expected)
    assert not mapping_for("mpii").annotated[:5].any()
    assert not mapping_for("coco").annotated[17:].any()


@pytest.mark.parametrize("keypoint_set", [COCO, MPII, AIC, CROWDPOSE, HALPE26, UNIFIED])
def test_flip_pairs_mirror_left_and_right(keypoint_set):
    perm = keypoint_set.flip_permutation
    np.testing.assert_array_equal(perm[perm], np.arange(keypoint_set.num_keypoints))
    for i, j in enumerate(perm):
        a, b = keypoint_set.names[i], keypoint_set.names[j]
        assert a.replace("left", "right") == b or a.replace("right", "left") == b


def test_flip_pairs_survive_the_mapping():
    """A flip in a dataset's order equals a flip in unified order (the maps commute)."""
    for dataset in ("mpii", "aic", "crowdpose"):
        mapping = mapping_for(dataset)
        values = np.arange(mapping.source.num_keypoints, dtype=float)
        flipped_then_mapped = mapping.keypoints_to_unified(values[mapping.source.flip_permutation], fill=-1)
        mapped_then_flipped = mapping.keypoints_to_unified(values, fill=-1)[UNIFIED.flip_permutation]
        np.testing.assert_array_equal(flipped_then_mapped, mapped_then_flipped)


def test_a_new_dataset_joins_through_a_name_table_only():
    """AI Challenger: 12 limbs, head top and neck; no face, no pelvis, no thorax."""
    mapping = build_mapping(AIC, NAME_MAPS["aic"])
    annotated = {UNIFIED.names[i] for i in np.flatnonzero(mapping.annotated)}
    assert annotated == set(AIC.names) - {"neck"} | {"upper_neck"}
    assert mapping.from_unified[UNIFIED.index("pelvis")] == UNANNOTATED
    assert mapping.from_unified[UNIFIED.index("upper_neck")] == AIC.index("neck")


def test_bad_name_tables_are_explained():
    with pytest.raises(ValueError, match="no entry for"):
        build_mapping(AIC, {"head_top": "head_top"})
    with pytest.raises(ValueError, match="does not have"):
        build_mapping(AIC, {**NAME_MAPS["aic"], "neck": "chin"})
    with pytest.raises(ValueError, match="same unified joint"):
        build_mapping(AIC, {**NAME_MAPS["aic"], "neck": "head_top"})
    with pytest.raises(KeyError, match="registered keypoint sets"):
        mapping_for("lsp")
    with pytest.raises(ValueError, match="sigmas"):
        KeypointSet("x", ("a", "b"), (), (0.1,), ())


def test_dataset_meta_is_mmpose_shaped():
    meta = UNIFIED.dataset_meta()
    assert meta["num_keypoints"] == 21
    assert meta["flip_indices"] == UNIFIED.flip_permutation.tolist()
    assert len(meta["sigmas"]) == 21
    assert set(meta["upper_body_ids"]) | set(meta["lower_body_ids"]) == set(range(21))


def _mmpose_dataset_info(name: str) -> dict:
    import mmpose  # noqa: PLC0415
    from mmpose.datasets.datasets.utils import parse_pose_metainfo  # noqa: PLC0415

    path = f"{mmpose.__path__[0]}/.mim/configs/_base_/datasets/{name}.py"
    return parse_pose_metainfo({"from_file": path})


@pytest.mark.parametrize("keypoint_set", [COCO, MPII, AIC, CROWDPOSE, HALPE26],
                         ids=lambda ks: ks.name)
def test_joint_tables_are_mmposes(keypoint_set):
    """Names, order, flip indices, sigmas and halves as MMPose's dataset_info; the links
    of the sets added with the union (CrowdPose, Halpe-26) in MMPose's order too."""
    meta = _mmpose_dataset_info(keypoint_set.name)
    ours = keypoint_set.dataset_meta()
    assert ours["keypoint_id2name"] == meta["keypoint_id2name"]
    assert ours["flip_indices"] == meta["flip_indices"]
    np.testing.assert_allclose(ours["sigmas"], meta["sigmas"], rtol=0, atol=1e-7)
    assert sorted(ours["upper_body_ids"]) == sorted(meta["upper_body_ids"])
    assert sorted(ours["lower_body_ids"]) == sorted(meta["lower_body_ids"])
    if keypoint_set in (CROWDPOSE, HALPE26):
        assert ours["skeleton_links"] == [list(link) for link in meta["skeleton_links"]]


def test_coco_and_mpii_give_the_papers_21_joints_in_any_order():
    for datasets in (["coco", "mpii"], ["mpii", "coco"]):
        assert unified_skeleton(datasets) == UNIFIED
    assert unified_skeleton(["coco", "mpii"]) is UNIFIED  # one object: cached by names


def test_halpe_adds_the_six_foot_joints():
    body = unified_skeleton(["coco", "mpii", "halpe26"])
    assert body.names[:21] == UNIFIED.names
    assert body.names[21:] == HALPE26.names[20:]
    assert body.sigmas[:21] == UNIFIED.sigmas
    assert body.sigmas[21:] == HALPE26.sigmas[20:]
    # Halpe's head, neck and mid-hip are the unified head top, upper neck and pelvis.
    halpe = mapping_for("halpe26", body)
    for joint, unified in (("head", "head_top"), ("neck", "upper_neck"), ("hip", "pelvis")):
        assert halpe.to_unified[HALPE26.index(joint)] == body.index(unified)
    assert halpe.annotated.sum() == 26 and not halpe.annotated[body.index("thorax")]
    # a foot is drawn from its ankle, and flips to the other foot
    perm = body.flip_permutation
    assert body.names[perm[body.index("left_heel")]] == "right_heel"
    assert (body.index("left_ankle"), body.index("left_heel")) in body.links


def test_unions_without_coco_link_the_spine_through_the_joints_present():
    aic_crowd = unified_skeleton(["crowdpose", "aic"])
    assert set(aic_crowd.names) == set(AIC.names) - {"neck"} | {"upper_neck"}
    assert (aic_crowd.index("upper_neck"), aic_crowd.index("head_top")) in aic_crowd.links
    halpe_only = unified_skeleton(["halpe26"])
    assert (halpe_only.index("pelvis"), halpe_only.index("upper_neck")) in halpe_only.links


def test_a_skeleton_is_rebuilt_from_its_names():
    for datasets in (["coco", "mpii"], ["coco", "mpii", "halpe26"], ["aic"]):
        skeleton = unified_skeleton(datasets)
        assert skeleton_from_names(skeleton.names) == skeleton
        assert keypoint_set_named(skeleton.names) == ("unified", skeleton)
    for dataset, keypoints in DATASET_SETS.items():
        assert keypoint_set_named(keypoints.names) == (dataset, keypoints)
    with pytest.raises(ValueError, match="not joints"):
        skeleton_from_names(("nose", "tail"))
    with pytest.raises(KeyError, match="unknown dataset"):
        unified_skeleton(["coco", "lsp"])


def test_a_dataset_outside_the_union_is_refused():
    with pytest.raises(ValueError, match="does not have"):
        mapping_for("halpe26", UNIFIED)  # UNIFIED has no feet
