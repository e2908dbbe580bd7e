"""The models of a run, as config: the student, the teachers, a backbone pretraining.

Plain frozen dataclasses, validated on construction (imports nothing heavy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unipose_ray.config.loading import ConfigError
from unipose_ray.config.settings import CodecConfig
from unipose_ray.skeleton import DATASET_SETS, KEYPOINT_SETS

STUDENT_SIZES = ("t", "s", "m")
RTMPOSE_WEIGHT_DECAY = {"t": 0.0, "s": 0.0, "m": 0.05}
"""AdamW weight decay of MMPose's ``rtmpose-{t,s,m}_8xb256-420e_coco-256x192.py`` (the
default of ``optim.weight_decay``; norms and biases never decay)."""


@dataclass(frozen=True)
class StudentConfig:
    """The RTMPose student.

    Attributes:
        size: ``t``, ``s`` or ``m``.
        dataset: keypoint set it predicts (``unified`` for the student; ``coco`` / ``mpii``
            when this run trains a single-dataset teacher).
        codec: input size and SimCC target settings.
        backbone_checkpoint: start the backbone from this checkpoint's ``backbone.*``
            tensors, as RTMPose configs do (MMPose's ``cspnext-<size>_udp-aic-coco_*.pth``);
            ``None``: from scratch, or from the ``pretrain`` run when one is configured.
            Teachers trained here start from it too.
        head: ``simcc`` (RTMPose's RTMCCHead); ``heatmap`` only for the backbone
            pretraining run (MMPose's CSPNeXt-UDP recipe, see :class:`PretrainConfig`).
    """

    size: str = "s"
    dataset: str = "unified"
    codec: CodecConfig = field(default_factory=CodecConfig)
    backbone_checkpoint: str | None = None
    head: str = "simcc"

    def __post_init__(self) -> None:
        if self.head not in ("simcc", "heatmap"):
            raise ConfigError(f"student.head must be 'simcc' or 'heatmap', got '{self.head}'")
        if self.size not in STUDENT_SIZES:
            raise ConfigError(f"student.size must be one of {STUDENT_SIZES}, got '{self.size}'")
        if self.dataset not in KEYPOINT_SETS:
            raise ConfigError(f"student.dataset must be one of {sorted(KEYPOINT_SETS)}, got "
                              f"'{self.dataset}'")


@dataclass(frozen=True)
class TeacherConfig:
    """One teacher: an MMPose config + checkpoint, its KD weight and its service resources.

    Attributes:
        name: short name used in metric names (``train/loss_kd_<name>``).
        dataset: the keypoint set it predicts (must be registered in ``skeleton``).
        config: MMPose config file (``.py``), e.g. ``rtmpose-m_8xb64-210e_mpii-256x256.py``.
        checkpoint: its checkpoint (``.pth``); ``None`` in the demo means "train it first".
        weight: KD weight (``w2`` for COCO, ``w3`` for MPII in the paper).
        train_size: RTMPose size when this teacher is trained here (no checkpoint given).
        train_codec: its input size / SimCC settings then (default: the student's).
        replicas: number of ``TeacherService`` actors; batches are spread across them.
        num_gpus: GPUs per replica (fractions allowed); 0 runs on CPU.
        num_cpus: CPUs per replica.
        resources: custom Ray resources per replica, e.g. ``{teacher: 1}`` to place the
            teachers on the nodes that advertise them.
        trust_checkpoint: allow unpickling arbitrary objects from the checkpoint (only for
            files you trust; the default loads tensors and a few numpy types only).
    """

    name: str
    dataset: str
    config: str | None = None
    checkpoint: str | None = None
    weight: float = 0.0
    train_size: str = "m"
    train_codec: CodecConfig | None = None
    replicas: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    resources: dict[str, float] = field(default_factory=dict)
    trust_checkpoint: bool = False

    def __post_init__(self) -> None:
        if self.dataset not in KEYPOINT_SETS:
            raise ConfigError(
                f"teacher '{self.name}': keypoint set '{self.dataset}' is not covered by the "
                f"unified skeleton; known sets: {sorted(KEYPOINT_SETS)} (add a name table in "
                "unipose_ray/skeleton/union.py to support another)")
        if self.weight < 0:
            raise ConfigError(f"teacher '{self.name}': weight must be >= 0, got {self.weight}")
        if self.replicas < 1:
            raise ConfigError(f"teacher '{self.name}': replicas must be >= 1")
        if self.num_gpus < 0 or self.num_cpus < 0:
            raise ConfigError(f"teacher '{self.name}': num_gpus / num_cpus must be >= 0")


@dataclass(frozen=True)
class PretrainConfig:
    """A backbone pretraining run ahead of every other training (the demo's).

    Every released RTMPose, the MPII one included, starts from a CSPNeXt backbone that was
    first trained for pose on AIC + COCO (``pt-aic-coco`` in the checkpoint names). Without
    downloads the demo makes its stand-in the same way MMPose made those (its
    ``cspnext-*_udp_*`` configs): the student's CSPNeXt with a ``HeatmapHead`` trained on
    UDP heatmaps of one dataset. Its backbone then starts the teachers and both students
    alike. (From scratch, RTMPose's SimCC head on tiny inputs leaves its loss plateau
    after a seed-dependent few hundred steps; heatmaps train the backbone reliably.)

    Attributes:
        dataset: the training set it learns (``coco``, ``mpii``...), with that keypoint set.
        epochs: passes over it.
        cpus_per_worker: CPUs (torch threads) per worker: nothing else runs then.
    """

    dataset: str = "coco"
    epochs: int = 8
    cpus_per_worker: float = 2.0

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_SETS:
            raise ConfigError(f"pretrain.dataset must be one of {list(DATASET_SETS)}, got "
                              f"'{self.dataset}'")
        if self.epochs < 1:
            raise ConfigError("pretrain.epochs must be >= 1")
