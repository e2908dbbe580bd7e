"""Each COCO-style dataset's keypoint metric as MMPose's configs set it, and its flat names.

MMPose validates every COCO-style dataset with one class, ``CocoMetric``; what differs is
how each config sets it (mmpose 1.3.2, under ``.mim/configs/body_2d_keypoint/``):

- COCO: ``CocoMetric()`` (``rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py``);
- AIC: ``CocoMetric(use_area=False)``
  (``topdown_heatmap/aic/td-hm_hrnet-w32_8xb64-210e_aic-256x192.py`` and its ResNet
  twin: the RTMPose configs that read AIC's val set score it with PCK, in Body8);
- CrowdPose: ``CocoMetric(use_area=False, iou_type='keypoints_crowd', prefix='crowdpose')``
  (``rtmpose/crowdpose/rtmpose-m_8xb64-210e_crowdpose-256x192.py``, as every top-down
  CrowdPose config);
- Halpe-26: none. The Body8-Halpe26 recipes (``rtmpose/body8/*_body8-halpe26-*.py``)
  validate the eight combined sets with ``PCKAccuracy(thr=0.1)`` and ``AUC``, and no config
  runs ``CocoMetric`` on Halpe; ours is COCO's ``CocoMetric()`` with Halpe-26's sigmas
  (``use_area``: the GT needs an ``area``, which ``coco_gt_from_records`` writes).

The sigmas are always the dataset's own (its ``dataset_meta``). ``use_area=False`` takes
the OKS scale from the GT box (``0.53 w h``, xtcocotools) for files without a GT ``area``;
``keypoints_crowd`` is xtcocotools' CrowdPose evaluation: AP and AR without the area
split, then AP over the easy, medium and hard images by each image's ``crowdIndex``
(``< 0.2``, ``< 0.8``, the rest).

Flat names: ``<dataset>_<suffix>`` with the suffixes of :data:`STABLE_SUFFIXES`, e.g.
``crowdpose_AP``, ``crowdpose_AP50``, ``crowdpose_AP_easy``. MLflow allows only
alphanumerics, ``_ - . / :`` and spaces in a metric name (``mlflow.utils.validation``), so
MMPose's ``AP(E)`` and ``AP (M)`` cannot be kept as they are; CrowdPose's ``AP(E/M/H)``
become ``AP_easy``, ``AP_medium``, ``AP_hard`` (the words xtcocotools prints), kept
apart from COCO's area split ``AP_M``/``AP_L``. The prefix is the dataset,
not MMPose's ``prefix`` (``coco`` for AIC too), so every dataset's AP has its own name.

This module imports no evaluation code (names are known before anything is evaluated);
:func:`~unipose_ray.evaluation.coco_metric.dataset_keypoint_metrics` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from unipose_ray.skeleton import DATASET_SETS, KeypointSet

if TYPE_CHECKING:

    pass

MMPOSE_STAT_NAMES: dict[str, tuple[str, ...]] = {
    "keypoints": ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75",
                  "AR (M)", "AR (L)"),
    "keypoints_crowd": ("AP", "AP .5", "AP .75", "AR", "AR .5", "AR .75", "AP(E)", "AP(M)",
                        "AP(H)"),
}
"""``CocoMetric``'s stat names per ``iou_type``, in ``COCOeval.stats`` order."""

STABLE_SUFFIXES: dict[str, str] = {
    "AP": "AP",
    "AP .5": "AP50",
    "AP .75": "AP75",
    "AP (M)": "AP_M",
    "AP (L)": "AP_L",
    "AR": "AR",
    "AR .5": "AR50",
    "AR .75": "AR75",
    "AR (M)": "AR_M",
    "AR (L)": "AR_L",
    "AP(E)": "AP_easy",
    "AP(M)": "AP_medium",
    "AP(H)": "AP_hard",
}
"""MMPose's stat names -> flat-name suffixes (COCO's first, in ``COCOeval.stats`` order,
then CrowdPose's); :mod:`unipose_ray.evaluation.names` re-exports it."""


@dataclass(frozen=True)
class CocoMetricSettings:
    """``CocoMetric``'s arguments for one dataset's validation, as MMPose's config sets them.

    Attributes:
        dataset: a registered dataset (its sigmas, and the metric names' prefix).
        use_area: OKS scale from the GT ``area`` (else ``0.53 w h`` of the GT box).
        iou_type: ``keypoints``, or ``keypoints_crowd`` (CrowdPose's crowd-index split).
        prefix: MMPose's ``prefix`` argument (``None``: ``CocoMetric``'s ``coco``); only
            MMPose's own logs use it.
        config: the MMPose config, under mmpose's ``.mim/configs/``, whose
            ``val_evaluator`` these are.
        note: where the settings are ours rather than a config's, why.
    """

    dataset: str
    config: str
    use_area: bool = True
    iou_type: str = "keypoints"
    prefix: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_SETS:
            raise ValueError(f"unknown dataset '{self.dataset}'; registered: "
                             f"{sorted(DATASET_SETS)}")
        if self.iou_type not in MMPOSE_STAT_NAMES:
            raise ValueError(f"iou_type must be one of {sorted(MMPOSE_STAT_NAMES)}, "
                             f"got '{self.iou_type}'")

    @property
    def keypoint_set(self) -> KeypointSet:
        return DATASET_SETS[self.dataset]

    def cocometric_kwargs(self) -> dict:
        """The ``CocoMetric`` arguments (besides ``ann_file``) these settings stand for."""
        return {"use_area": self.use_area, "iou_type": self.iou_type, "prefix": self.prefix}

    def metric_names(self) -> tuple[str, ...]:
        """The flat names ``coco_metric.dataset_keypoint_metrics`` returns, in MMPose's
        order."""
        return tuple(f"{self.dataset}_{STABLE_SUFFIXES[s]}"
                     for s in MMPOSE_STAT_NAMES[self.iou_type])


_CONFIGS = "body_2d_keypoint/"
DATASET_METRICS: dict[str, CocoMetricSettings] = {
    s.dataset: s
    for s in (
        CocoMetricSettings("coco", _CONFIGS + "rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py"),
        CocoMetricSettings(
            "aic", _CONFIGS + "topdown_heatmap/aic/td-hm_hrnet-w32_8xb64-210e_aic-256x192.py",
            use_area=False),
        CocoMetricSettings(
            "crowdpose", _CONFIGS + "rtmpose/crowdpose/rtmpose-m_8xb64-210e_crowdpose-256x192.py",
            use_area=False, iou_type="keypoints_crowd", prefix="crowdpose"),
        CocoMetricSettings(
            "halpe26", _CONFIGS + "rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py",
            note="no MMPose config evaluates Halpe with CocoMetric (Body8-Halpe26 validates "
                 "with PCKAccuracy and AUC): COCO's settings, Halpe-26's sigmas"),
    )
}
"""The COCO-style datasets' metric settings (MPII is PCKh: :mod:`.pckh`)."""


def metric_settings(dataset: str) -> CocoMetricSettings:
    """A dataset's :class:`CocoMetricSettings`.

    Raises:
        KeyError: a dataset without COCO-style AP (MPII), or an unknown one.
    """
    if dataset not in DATASET_METRICS:
        raise KeyError(f"no COCO keypoint metric for dataset '{dataset}'; datasets with one: "
                       f"{sorted(DATASET_METRICS)} (MPII's metric is PCKh)")
    return DATASET_METRICS[dataset]


def stable_metric_names(mmpose_stats: dict[str, float], prefix: str = "coco") -> dict[str, float]:
    """MMPose's stat names -> the product's flat names: ``AP .5`` -> ``{prefix}_AP50``,
    ``AP(E)`` -> ``{prefix}_AP_easy``.

    ``prefix`` is the dataset (``coco``, ``crowdpose``...), or ``unified`` for unified AP.
    """
    return {f"{prefix}_{STABLE_SUFFIXES[name]}": value for name, value in mmpose_stats.items()}


def dataset_metric_names(dataset: str) -> tuple[str, ...]:
    """The flat names of a dataset's AP/AR, without evaluating (``crowdpose_AP``, ...)."""
    return metric_settings(dataset).metric_names()
