"""Metrics as MMPose computes them: SimCC decoding, COCO keypoint AP/AR, MPII PCKh.

COCO AP and PCKh are MMPose's own ``CocoMetric`` and ``MpiiPCKAccuracy``, fed our
predictions (:mod:`.coco_metric`, :mod:`.pckh`); SimCC decoding and top-down inference follow
MMPose's code (:mod:`.decode`, :mod:`.topdown`); the cross-dataset table is
:mod:`.cross_dataset`. Flat metric names for tracking (:mod:`.names`): ``coco_AP``,
``coco_AP50``, ..., ``unified_AP``, ..., ``mpii_PCKh``, ``mpii_PCKh@0.1``,
``mpii_PCKh/<joint>``. (Nothing is imported here: a job reads its metric names before it
imports numpy's and torch's worth of evaluation.)
"""
