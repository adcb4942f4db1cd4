"""Throughput of robustlab.corruptions vs the reference imagecorruptions package, 19 x 5 at 32x32.

    python bench/corruptions.py [--n 1000] [--params imagenet] [--repeats 3] [--threads N]

Both corrupt the same ``n`` images (CIFAR-like random smooth images, uint8 for the reference); the table
gives images per second and the speed-up per corruption (summed over the 5 severities; the fastest of
``--repeats`` runs on each side) and overall. Both sides are warmed up outside the timings: the reference's
numba compilation, and our per-size caches (filter operators, inversion tables, frost textures) on 8 images.
Both libraries run with their default thread counts (torch's and OpenCV's, the reference's only threaded
library: one per core); ``--threads N`` sets both to N (``--threads 1``: a single-core comparison).
"""

import argparse
import warnings

import numpy as np
import torch

from robustlab.corruptions import CORRUPTIONS, corrupt
from robustlab.utils import timed as timed_call


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=32, mode="bicubic", align_corners=False)
    return torch.round((x + 0.1 * torch.rand(n, 3, 32, 32, generator=g)).clamp(0, 1) * 255) / 255


def timed(fn) -> float:
    """:func:`robustlab.utils.timed` with the reference's NumPy randomness reseeded first."""
    np.random.seed(0)
    return timed_call(fn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--params", default="imagenet", choices=["imagenet", "cifar"])
    parser.add_argument("--threads", type=int, help="torch and OpenCV threads (default: each library's own)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per side and corruption; the fastest is kept"
    )
    args = parser.parse_args()
    import cv2
    from imagecorruptions import corrupt as reference

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)

    warnings.filterwarnings("ignore")
    x = images(args.n)
    arrays = list((x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    reference(arrays[0], 1, "glass_blur")  # numba compilation outside the timing
    for name in CORRUPTIONS:
        for s in range(1, 6):
            corrupt(x[:8], name, s, torch.Generator().manual_seed(s), params=args.params)
    print(
        f"{args.n} images 32x32, params={args.params}, torch threads {torch.get_num_threads()}, "
        f"OpenCV threads {cv2.getNumThreads()}, fastest of {args.repeats}"
    )
    print(f"{'corruption':20s} {'ours img/s':>11s} {'ref img/s':>10s} {'speed-up':>9s}")
    total_ours = total_ref = 0.0
    for name in CORRUPTIONS:
        ours = min(
            timed(
                lambda: [corrupt(x, name, s, torch.Generator().manual_seed(s), params=args.params) for s in range(1, 6)]
            )
            for _ in range(args.repeats)
        )
        ref = min(
            timed(lambda: [reference(a, s, name) for s in range(1, 6) for a in arrays]) for _ in range(args.repeats)
        )
        total_ours, total_ref = total_ours + ours, total_ref + ref
        n = 5 * args.n
        print(f"{name:20s} {n / ours:11.0f} {n / ref:10.0f} {ref / ours:8.1f}x", flush=True)
    n = 5 * args.n * len(CORRUPTIONS)
    print(f"{'overall':20s} {n / total_ours:11.0f} {n / total_ref:10.0f} {total_ref / total_ours:8.1f}x")


if __name__ == "__main__":
    main()
