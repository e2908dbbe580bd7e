"""Benchmark an ONNX export against PyTorch on the CPU: latency at batch 1 and batched.

    python jobs/benchmark_export.py                         # RTMPose-t, 192x256, 2 threads
    python jobs/benchmark_export.py --size m --input-size 192 256 --batch-size 16 --repeats 20

Builds a randomly initialised RTMPose of the given size (latency does not depend on the
weights), exports it with :func:`unipose_ray.deploy.onnx.export_onnx` into a temporary folder, and
times PyTorch (eval mode, no autograd) and onnxruntime (CPU provider) with the same thread
count, side by side in one run: for each batch size, each runtime in turn after its own
warm-up. Both take the same uint8 RGB crops and normalise them (the ONNX runner outside its
graph). Prints the median latency per call and per image and the PyTorch / onnxruntime
ratio, and the machine's load average, since other work on the cores slows both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from unipose_ray.deploy.onnx import OnnxPoseModel, export_onnx
from unipose_ray.models import DEFAULT_SIGMAS, RTMPOSE_SIZES, build_rtmpose


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(RTMPOSE_SIZES), default="t", help="RTMPose size")
    parser.add_argument("--input-size", type=int, nargs=2, default=(192, 256), metavar=("W", "H"),
                        help="crop width and height (multiples of 32)")
    parser.add_argument("--keypoints", type=int, default=21, help="output keypoints K")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads of each runtime (torch.set_num_threads, onnxruntime "
                             "intra-op threads)")
    parser.add_argument("--batch-size", type=int, default=16, help="the batched measurement")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per runtime and batch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    args = parser.parse_args(argv)
    for name in ("threads", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def time_side_by_side(runners: dict[str, Callable[[torch.Tensor], object]], images: torch.Tensor,
                      repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each runner on ``images``: one runner after the other,
    each timed in a block after its own warm-up.

    Not call by call: each runtime's idle threads keep spinning for a while after a call
    (OpenMP's and onnxruntime's pools both do), and on 2 cores that alone made PyTorch's
    batch-1 calls ~50x slower than when it runs by itself.
    """
    medians = {}
    for name, run in runners.items():
        for _ in range(warmup):
            run(images)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(images)
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    return medians


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    """Returns ``{batch size: {"pytorch": s, "onnxruntime": s}}`` median seconds per call."""
    args = parse_args(argv)
    input_size = tuple(args.input_size)
    # Sigma only shapes training targets; any value builds the same network.
    sigma = DEFAULT_SIGMAS.get(input_size, (5.66, 5.66))
    model = build_rtmpose(args.size, args.keypoints, input_size, sigma).eval()
    torch.set_num_threads(args.threads)
    names = [f"keypoint_{i}" for i in range(args.keypoints)]
    w, h = input_size
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="unipose_bench_export_") as tmp:
        exported = OnnxPoseModel(export_onnx(model, Path(tmp) / "model.onnx", names),
                                 intra_op_threads=args.threads)

        def pytorch(images: torch.Tensor) -> object:
            with torch.no_grad():
                return model(images)

        runners = {"pytorch": pytorch, "onnxruntime": exported}
        print(f"RTMPose-{args.size}, {args.keypoints} keypoints, input {w}x{h}, "
              f"{args.threads} thread(s), median of {args.repeats} calls after {args.warmup} "
              f"warm-up calls, CPU ({os.cpu_count()} cores; 1-min load average "
              f"{os.getloadavg()[0]:.2f} before timing: other work slows both runtimes)")
        print(f"{'batch':>5}  {'runtime':<12}{'ms/call':>10}{'ms/image':>10}")
        generator = torch.Generator().manual_seed(0)
        for batch in dict.fromkeys((1, args.batch_size)):
            images = torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8,
                                   generator=generator)
            results[batch] = time_side_by_side(runners, images, args.repeats, args.warmup)
            for name, seconds in results[batch].items():
                print(f"{batch:>5}  {name:<12}{seconds * 1e3:>10.2f}{seconds * 1e3 / batch:>10.2f}")
            ratio = results[batch]["pytorch"] / results[batch]["onnxruntime"]
            print(f"{batch:>5}  pytorch / onnxruntime: {ratio:.2f}x")
    return results


if __name__ == "__main__":
    main()
