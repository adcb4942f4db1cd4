"""What the evaluation journal (issue 16) costs, in one run.

    python bench/journal.py --ckpt PATH [--repeats 3] [--images 10000]

Overhead: a default ``evaluate.py`` run (FGSM + PGD-40 on the checkpoint's 1000 MNIST-5k test images, the cheap
checks) with ``journal=true`` against ``journal=false``, the fastest of ``--repeats`` interleaved runs each.
Size: the journal of an evaluation of ``--images`` images (the MNIST-5k test images cycled, as a tensor file) under
the default attacks and every attack-utility metric (FGSM only: the journal's size does not depend on the attack's
steps), per process.
"""

import argparse
import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path

import torch

from robustlab.cli import compose_config
from robustlab.data import MNIST5k
from robustlab.evaluate import evaluate
from robustlab.utils import timed

METRICS = "metric=[acac,actc,aldp,ass,psd,nte,rgb,ric]"


def run(ckpt: str, out: str, overrides: list[str]) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        cfg = compose_config(
            "eval", [f"ckpt={ckpt}", f"paths.output_dir={out}", "logger=none", "progress=false", *overrides]
        )
        return evaluate(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    times = {"journal=true": [], "journal=false": []}
    for _ in range(args.repeats):
        for setting in times:
            with tempfile.TemporaryDirectory() as out:
                times[setting].append(timed(lambda: run(args.ckpt, out, [setting])))
    best = {k: min(v) for k, v in times.items()}
    print(f"default evaluate.py run, fastest of {args.repeats}:")
    for setting, seconds in best.items():
        print(f"  {setting}: {seconds:.2f} s  (all: {', '.join(f'{t:.2f}' for t in times[setting])})")
    print(f"  overhead: {100 * (best['journal=true'] / best['journal=false'] - 1):+.1f}%")

    test = MNIST5k().load("test")
    reps = -(-args.images // len(test.x))
    x, y = test.x.repeat(reps, 1, 1, 1)[: args.images], test.y.repeat(reps)[: args.images]
    with tempfile.TemporaryDirectory() as out:
        data = Path(out) / "images.pt"
        torch.save({"x": (x * 255).round().to(torch.uint8), "y": y}, data)
        run(args.ckpt, out, ["data=tensors", f"data.path={data}", "data.family=mnist", "attack=[fgsm,pgd_linf]",
                             "attack.pgd_linf.steps=1", METRICS])  # fmt: skip
        size = (Path(out) / "journal" / "rank0.pt").stat().st_size
    print(f"journal of {args.images} images (FGSM + PGD, every attack-utility metric): {size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
