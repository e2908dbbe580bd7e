"""Metrics as MMPose computes them: SimCC decoding, keypoint AP/AR per dataset, MPII PCKh.

AP/AR are MMPose's ``CocoMetric`` with each dataset's settings (:mod:`.dataset_metrics`:
COCO, AIC, CrowdPose's AP(E/M/H), Halpe-26), computed by :mod:`.coco_metric` on predictions
stacked by :mod:`.coco_predictions`; PCKh is ``MpiiPCKAccuracy`` (:mod:`.pckh`); SimCC decoding and top-down inference follow
MMPose's code (:mod:`.decode`, :mod:`.topdown`); the cross-dataset table is
:mod:`.cross_dataset`. Flat metric names for tracking (:mod:`.names`): ``coco_AP``,
``coco_AP50``, ..., ``unified_AP``, ..., ``mpii_PCKh``, ``mpii_PCKh@0.1``,
``mpii_PCKh/<joint>``. (Nothing is imported here: a job reads its metric names before it
imports numpy's and torch's worth of evaluation.)
"""
