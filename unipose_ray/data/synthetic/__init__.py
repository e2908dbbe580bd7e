"""Generated people, written as real COCO, MPII, AIC, CrowdPose and Halpe-26 annotation files.

Real images cannot be downloaded everywhere, so the default dataset is drawn:
a 2D kinematic figure carrying all 21 unified joints (plus face points), 1-4 per image,
with varied pose, size, colours, overlap, occluders and truncation, on textured
backgrounds. The drawing follows one rule so that a small CNN learns it in minutes:

- the person's **left** limbs, left eye and left ear are warm (red to yellow), the
  **right** ones cool (cyan to blue); the rule never changes, only the shades jitter;
- the torso is a quadrilateral from the shoulders to the hips (green or purple tones);
  the neck is a segment thorax -> upper_neck; the head is an ellipse whose bottom is
  upper_neck and whose top is head_top (skin tone from the front, hair from the back);
- every limb joint is a darker disc of its limb's colour; pelvis, thorax, upper_neck and
  head_top are white discs with a black rim; the nose is a dark dot;
- in runs with Halpe-26 every figure has feet (:mod:`~unipose_ray.data.synthetic.feet`): a
  dark shoe in its leg's hue, the big toe a pale disc, the small toe a vivid one, the heel
  a dark one in a white ring. Without Halpe-26 nothing of it is drawn or drawn from the
  random streams: COCO and MPII images and files are byte for byte what they always were.

Geometry: pelvis = midpoint of the hips, thorax = midpoint of the shoulders moved up the
torso by 3% of the height, upper_neck above the thorax, head_top above upper_neck along
the head axis. Coordinates are pixels with pixel centres at integers (x = 0 is the centre
of the first column), which is how cv2 draws and how MMPose reads keypoints.

Labels (COCO ``v``): 2 visible; 1 labelled but occluded (covered by another person, an
occluder or the own arm, a face point turned away, or a heel or toes behind their own
foot); 0 unlabelled (outside the image, or
eyes/nose on the back of the head), with ``x = y = 0``. MPII ``joints_vis`` is 1 exactly
where ``v == 2``; joints outside the image are written as ``[-1, -1]`` like the real files.

MPII files follow the real MPII convention, MATLAB 1-based pixels: ``joints``, ``head_box``
and ``center`` are the 0-based truth + 1, and ``center`` is also pre-compensated for the
15 px shift MMPose applies (``center_file = (cx + 1, cy + 1 - 15 * scale)``), so MMPose's
box centre is the person-box centre ``(cx, cy)`` and its box side ``200 * scale`` is the
longer person-box side. MMPose keeps MPII joints 1-based and adds 1 to its predictions in
``MpiiPCKAccuracy``; unipose_ray's reader subtracts the 1 when it reads the joints. Both
treat the generated files exactly as they treat the real ones.

The datasets are different image sets with a mild domain gap: "coco" has cluttered
backgrounds (noise, shapes) and more, smaller people; "mpii" has smooth backgrounds
(gradients, stripes) and fewer, larger people; "aic" is in between; "crowdpose" stands
mostly 3-4 (up to ``max_people``) large people around one spot; "halpe26" is COCO-like.
Each dataset's files label its own joints (AIC's and CrowdPose's ``neck`` is the unified
``upper_neck``, their head top ``head_top``; Halpe's ``head``, ``neck``, ``hip`` are
``head_top``, ``upper_neck``, ``pelvis``), in the formats MMPose reads: COCO style for
COCO, AIC, CrowdPose (with each image's ``crowdIndex``) and Halpe-26 (26 joints), MMPose's
list for MPII, and AI Challenger's own list besides. Each dataset's unified validation file
annotates its images with every joint of the run's skeleton (the union of its datasets: 21
joints for COCO + MPII, whatever else is added but Halpe-26; 27 with it). Layout: see
:func:`dataset_paths`.
"""

from unipose_ray.data.synthetic.config import (
    ALWAYS_WRITTEN,
    DATASETS,
    SPLITS,
    SyntheticConfig,
    SyntheticDataset,
    dataset_paths,
)
from unipose_ray.data.synthetic.files import generate_dataset
from unipose_ray.data.synthetic.scene import PersonLabel, image_rng, render_sample

__all__ = ["ALWAYS_WRITTEN", "DATASETS", "SPLITS", "PersonLabel", "SyntheticConfig",
           "SyntheticDataset", "dataset_paths", "generate_dataset", "image_rng", "render_sample"]
