"""Generated people, written as real COCO and MPII annotation files.

Real COCO/MPII images cannot be downloaded everywhere, so the default dataset is drawn:
a 2D kinematic figure carrying all 21 unified joints (plus face points), 1-4 per image,
with varied pose, size, colours, overlap, occluders and truncation, on textured
backgrounds. The drawing follows one rule so that a small CNN learns it in minutes:

- the person's **left** limbs, left eye and left ear are warm (red to yellow), the
  **right** ones cool (cyan to blue); the rule never changes, only the shades jitter;
- the torso is a quadrilateral from the shoulders to the hips (green or purple tones);
  the neck is a segment thorax -> upper_neck; the head is an ellipse whose bottom is
  upper_neck and whose top is head_top (skin tone from the front, hair from the back);
- every limb joint is a darker disc of its limb's colour; pelvis, thorax, upper_neck and
  head_top are white discs with a black rim; the nose is a dark dot.

Geometry: pelvis = midpoint of the hips, thorax = midpoint of the shoulders moved up the
torso by 3% of the height, upper_neck above the thorax, head_top above upper_neck along
the head axis. Coordinates are pixels with pixel centres at integers (x = 0 is the centre
of the first column), which is how cv2 draws and how MMPose reads keypoints.

Labels (COCO ``v``): 2 visible; 1 labelled but occluded (covered by another person, an
occluder or the own arm, or a face point turned away); 0 unlabelled (outside the image, or
eyes/nose on the back of the head), with ``x = y = 0``. MPII ``joints_vis`` is 1 exactly
where ``v == 2``; joints outside the image are written as ``[-1, -1]`` like the real files.

MPII files follow the real MPII convention, MATLAB 1-based pixels: ``joints``, ``head_box``
and ``center`` are the 0-based truth + 1, and ``center`` is also pre-compensated for the
15 px shift MMPose applies (``center_file = (cx + 1, cy + 1 - 15 * scale)``), so MMPose's
box centre is the person-box centre ``(cx, cy)`` and its box side ``200 * scale`` is the
longer person-box side. MMPose keeps MPII joints 1-based and adds 1 to its predictions in
``MpiiPCKAccuracy``; unipose_ray's reader subtracts the 1 when it reads the joints. Both
treat the generated files exactly as they treat the real ones.

The two datasets are different image sets with a mild domain gap: "coco" has cluttered
backgrounds (noise, shapes) and more, smaller people; "mpii" has smooth backgrounds
(gradients, stripes) and fewer, larger people. Layout: see :func:`dataset_paths`.
"""

from unipose_ray.data.synthetic.config import (
    DATASETS,
    SPLITS,
    SyntheticConfig,
    SyntheticDataset,
    dataset_paths,
)
from unipose_ray.data.synthetic.files import generate_dataset
from unipose_ray.data.synthetic.scene import PersonLabel, image_rng, render_sample

__all__ = ["DATASETS", "SPLITS", "PersonLabel", "SyntheticConfig", "SyntheticDataset",
           "dataset_paths", "generate_dataset", "image_rng", "render_sample"]
