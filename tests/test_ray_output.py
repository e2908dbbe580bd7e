"""Ray's chatter is filtered from the driver's output; real errors are not."""

from unipose_ray.runtime.output import keep_lines

PROGRESS = "[demo] step 10/300 epoch 0 loss=0.5 | 60.1 samples/s"
REAL_ERROR = [
    "Traceback (most recent call last):",
    '  File "/work/unipose_ray/train/loop.py", line 10, in train_fn_per_worker',
    "    raise FileNotFoundError(path)",
    "FileNotFoundError: data/coco/annotations/person_keypoints_val.json",
]


def test_noise_goes_progress_and_real_errors_stay():
    lines = [
        "Requesting resources: {'CPU': 1.0} * 1",
        "[2026-11-30 01:15:17,186 E 28057 28108] core_worker.cc:2465: Actor with class name: "
        "'MapWorker(MapBatches(CropStage))' and ID: 'cbe6' has constructor arguments in the "
        "object store and max_restarts > 0.",
        PROGRESS,
        "/venv/ray/data/_internal/execution/interfaces/execution_options.py:151: "
        "DeprecationWarning: `ExecutionOptions.exclude_resources` is deprecated",
        "  self.exclude_resources = exclude_resources",
        "WARNING: 8 PYTHON worker processes have been started on node: 52 with address: 1.2.3.4",
        *REAL_ERROR,
        "Starting execution of Dataset train_0. Full logs are in /tmp/ray/session/logs/ray-data",
    ]
    assert keep_lines(lines) == [PROGRESS, *REAL_ERROR]


def test_a_transient_retry_traceback_goes_whole():
    retry = [
        "Traceback (most recent call last):",
        '  File "/venv/ray/train/v2/_internal/execution/controller.py", line 5, in _poll',
        "    ray.get(ref, timeout=10)",
        "ray.exceptions.GetTimeoutError: Failed to send resource request within 10 s",
    ]
    assert keep_lines([*retry, PROGRESS]) == [PROGRESS]
    assert keep_lines([*REAL_ERROR, *retry]) == REAL_ERROR
