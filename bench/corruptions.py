"""Throughput of robustlab.corruptions vs the reference imagecorruptions package, 19 x 5 at 32x32.

    python bench/corruptions.py [--n 1000] [--params imagenet]

Both corrupt the same ``n`` images (CIFAR-like random smooth images, uint8 for the reference); the table
gives images per second and the speed-up per corruption (summed over the 5 severities) and overall.
"""
import argparse
import time
import warnings

import numpy as np
import torch

from robustlab.corruptions import CORRUPTIONS, corrupt


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=32, mode="bicubic", align_corners=False)
    return (torch.round((x + 0.1 * torch.rand(n, 3, 32, 32, generator=g)).clamp(0, 1) * 255) / 255)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--params", default="imagenet", choices=["imagenet", "cifar"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the reference uses one core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from imagecorruptions import corrupt as reference

    warnings.filterwarnings("ignore")
    x = images(args.n)
    arrays = list((x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    reference(arrays[0], 1, "glass_blur")  # numba compilation outside the timing
    print(f"{args.n} images 32x32, params={args.params}, torch threads={torch.get_num_threads()}")
    print(f"{'corruption':20s} {'ours img/s':>11s} {'ref img/s':>10s} {'speed-up':>9s}")
    total_ours = total_ref = 0.0
    for name in CORRUPTIONS:
        t0 = time.perf_counter()
        for s in range(1, 6):
            corrupt(x, name, s, torch.Generator().manual_seed(s), params=args.params)
        ours = time.perf_counter() - t0
        np.random.seed(0)
        t0 = time.perf_counter()
        for s in range(1, 6):
            for a in arrays:
                reference(a, s, name)
        ref = time.perf_counter() - t0
        total_ours, total_ref = total_ours + ours, total_ref + ref
        n = 5 * args.n
        print(f"{name:20s} {n / ours:11.0f} {n / ref:10.0f} {ref / ours:8.1f}x", flush=True)
    n = 5 * args.n * len(CORRUPTIONS)
    print(f"{'overall':20s} {n / total_ours:11.0f} {n / total_ref:10.0f} {total_ref / total_ours:8.1f}x")


if __name__ == "__main__":
    main()
