"""Time robustlab attacks against torchattacks on one model, batch and device, in one run.

    python bench/attacks.py [--batch 200] [--repeats 9] [--device cpu] [--aa-batch 100] [--aa-repeats 3]
                            [--eval-images 500] [--square-images 1000] [--square-queries 1000] [--quick]
                            [--model mnist_cnn|resnet18] [--compile]

Prints, per attack, our median time, torchattacks' median time and the ratio (goal <= 1.0;
AutoAttack <= 0.8), and PGD-k against k bare forward+backward passes of the model (goal <= 1.15).
Runs are interleaved, in alternating order, and the median of ``--repeats`` is reported to damp noise.
The PGD and CW rows use an (untrained) DEEPSEC MNIST CNN on random images (``--model resnet18``: robustlab's
ResNet-18 on random 3x32x32 images at eps 8/255, step 2/255, the GPU table's setting): their timings do not depend
on the weights except through CW early stopping (see the rows). Two more rows time our PGD-10 with its gradient
steps under bf16 autocast (``precision=bf16-mixed``, with the float32 re-check of its successes) and, with
``--compile``, on the ``torch.compile``-d model (``compile=true``; the warm-up call, which compiles, is left out).
The AutoAttack row needs points that stay robust, so it uses the same CNN trained for ``--aa-epochs`` on MNIST-5k
and the first ``--aa-batch`` test images at eps 0.1, with torchattacks' AutoAttack(version="standard") settings on
both sides: 10 steps for APGD-CE, APGD-T and FAB-T, 9 targets, Square 5000 queries with the schedule rescaled to the
budget.

The early-exit rows use that trained CNN on ``--eval-images`` test images at eps 0.3 (issue 17): our PGD-10 with
per-example seeds, with and without ``early_stop``, against torchattacks' PGD-10, each with its robust accuracy.
Then seeded noise for a 512x3x32x32 batch against ``torch.rand_like`` (goal <= 1.5), and the share of a Square run
(``--square-queries`` on ``--square-images`` test images) spent drawing its per-example noise (goal <= 10%).
``--quick`` shrinks every size and repeat count, for a first look (or a GPU session) in a few minutes.
"""

import argparse
import statistics

import torch
import torch.nn.functional as F
import torchattacks

from robustlab.attacks import APGD, APGDT, CW2, FABT, PGD, AutoAttack, Square
from robustlab.attacks import square as square_module
from robustlab.attacks.base import random_like
from robustlab.data import MNIST5k
from robustlab.evaluation.loop import rechecked
from robustlab.models import ResNet18
from robustlab.models.mnist_cnn import MNISTCNN
from robustlab.utils import keep_freed_memory, timed

QUICK = {
    "batch": 100,
    "repeats": 3,
    "aa_batch": 50,
    "aa_repeats": 1,
    "eval_images": 200,
    "square_images": 200,
    "square_queries": 200,
}


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _order(repeat: int) -> tuple[int, int]:
    """Ours first on even repeats, torchattacks first on odd ones, so neither side always runs second."""
    return (0, 1) if repeat % 2 == 0 else (1, 0)


def _trained_model(epochs: int, device) -> torch.nn.Module:
    """The DEEPSEC MNIST CNN after ``epochs`` of Adam on the MNIST-5k training images."""
    train = MNIST5k().load("train")
    model = MNISTCNN().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(train.y), generator=gen).split(100):
            loss = F.cross_entropy(model(train.x[idx].to(device)), torch.as_tensor(train.y[idx]).to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def _autoattack_pair(model, x, y, eps: float, queries: int):
    ours = AutoAttack(
        eps=eps,
        version="custom",
        attacks=[
            APGD(eps=eps, steps=10),
            APGDT(eps=eps, steps=10, n_targets=9),
            FABT(eps=eps, steps=10, n_targets=9),
            Square(eps=eps, n_queries=queries, rescale_schedule=True),
        ],
    )
    theirs = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    theirs._autoattack.attacks[-1].n_queries = queries
    seeds = torch.arange(len(x))
    return lambda: ours(model, x, y, seeds=seeds), lambda: theirs(x, y)


def _accuracy(model, x: torch.Tensor, y: torch.Tensor, mean: bool = True):
    """The share of ``x`` classified as ``y`` (``mean=False``: the mask)."""
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    return correct.float().mean().item() if mean else correct


def _early_exit(model, x, y, repeats: int, device) -> None:
    """Robust accuracy under PGD-10 at eps 0.3: ours with per-example seeds, with and without early exit (its run
    returns the success mask), against torchattacks' PGD-10 and the forward pass that scores its images."""
    seeds = torch.arange(len(x), device=device)
    ours = {stop: PGD(eps=0.3, step=0.03, steps=10, early_stop=stop) for stop in (True, False)}
    peer = torchattacks.PGD(model, eps=0.3, alpha=0.03, steps=10, random_start=True)
    runs = {stop: (lambda a=a: a.run(model, x, y, seeds=seeds).success) for stop, a in ours.items()}
    runs["torchattacks"] = lambda: ~_accuracy(model, peer(x, y), y, mean=False)
    accuracy = {key: (~run()).float().mean().item() for key, run in runs.items()}
    times = {key: [] for key in runs}
    for r in range(repeats):
        for key in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            times[key].append(timed(runs[key], device))
    median = {key: statistics.median(t) for key, t in times.items()}
    print(f"PGD-10 evaluation at eps 0.3 on {len(x)} test images of the trained CNN, median of {repeats}:")
    print(f"{'run':<26}{'seconds':>9}{'/ torchattacks':>16}{'robust accuracy':>17}")
    labels = {True: "ours, early_stop", False: "ours, every step", "torchattacks": "torchattacks + scoring"}
    for key, label in labels.items():
        print(f"{label:<26}{median[key]:>9.3f}{median[key] / median['torchattacks']:>16.2f}{accuracy[key]:>17.4f}")
    assert accuracy[True] == accuracy[False], "early exit must not change robust accuracy"


def _seeded_noise(repeats: int, device) -> None:
    x, seeds = torch.empty(512, 3, 32, 32, device=device), torch.arange(512, device=device)
    seeded = statistics.median(timed(lambda: random_like(x, seeds), device) for _ in range(repeats))
    plain = statistics.median(timed(lambda: torch.rand_like(x), device) for _ in range(repeats))
    print(
        f"seeded noise 512x3x32x32 ({device}): {1000 * seeded:.2f} ms, torch.rand_like {1000 * plain:.2f} ms, "
        f"ratio {seeded / plain:.2f}"
    )


def _pgd_model(name: str, batch: int, device):
    """The PGD/CW rows' untrained model, random images and labels, eps and step."""
    if name == "resnet18":
        model = ResNet18()
        shape, eps = (3, 32, 32), 8 / 255
    else:
        model, shape, eps = MNISTCNN(), (1, 28, 28), 0.3
    x = torch.rand(batch, *shape, device=device)
    return model.to(device).eval(), x, torch.randint(0, 10, (batch,), device=device), eps, eps / 4


def _bf16_pgd(model, x, y, eps, step, k):
    """Our PGD-k with its steps under bf16 autocast, successes re-checked in float32 (the evaluation's path)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        result = PGD(eps=eps, step=step, steps=k).run(model, x, y)
    return rechecked(model, result, y).x_adv


def _square_noise(model, x, y, queries: int, device) -> None:
    """The share of one seeded Square run spent in its per-example noise streams."""
    spent, draw = [0.0], square_module._Streams.draw

    def counted(self, width, rows=1):
        out = []
        spent[0] += timed(lambda: out.append(draw(self, width, rows)), device)
        return out[0]

    square_module._Streams.draw = counted
    out = []
    try:
        attack = Square(eps=0.3, n_queries=queries, rescale_schedule=True)
        total = timed(lambda: out.append(attack(model, x, y, seeds=torch.arange(len(x), device=device))), device)
    finally:
        square_module._Streams.draw = draw
    print(
        f"Square ({queries} queries, eps 0.3) on {len(x)} test images of the trained CNN: {total:.2f} s, of which "
        f"drawing noise {spent[0]:.3f} s ({100 * spent[0] / total:.1f}%); robust accuracy "
        f"{_accuracy(model, out[0], y):.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cw-steps", type=int, default=50)
    parser.add_argument("--aa-batch", type=int, default=100)
    parser.add_argument("--aa-repeats", type=int, default=3)
    parser.add_argument("--aa-epochs", type=int, default=2)
    parser.add_argument("--aa-queries", type=int, default=5000)
    parser.add_argument("--eval-images", type=int, default=500)
    parser.add_argument("--square-images", type=int, default=1000)
    parser.add_argument("--square-queries", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats: " + str(QUICK))
    parser.add_argument("--model", choices=("mnist_cnn", "resnet18"), default="mnist_cnn", help="PGD/CW rows' model")
    parser.add_argument("--compile", action="store_true", help="add a row for PGD-10 on the torch.compile-d model")
    args = parser.parse_args()
    if args.quick:  # the sizes given on the command line are kept
        vars(args).update({k: v for k, v in QUICK.items() if getattr(args, k) == parser.get_default(k)})
    print(f"keep_freed_memory: {keep_freed_memory()}")
    torch.manual_seed(0)
    device = torch.device(args.device)
    model, x, y, eps, step = _pgd_model(args.model, args.batch, device)
    k = 10

    def bare_passes():
        for _ in range(k):
            xr = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xr), y), xr)

    runs = {
        "pgd_linf_10": (
            lambda: PGD(eps=eps, step=step, steps=k)(model, x, y),
            lambda: torchattacks.PGD(model, eps=eps, alpha=step, steps=k, random_start=True)(x, y),
        ),
        "pgd_10_bf16": (
            lambda: _bf16_pgd(model, x, y, eps, step, k),
            lambda: torchattacks.PGD(model, eps=eps, alpha=step, steps=k, random_start=True)(x, y),
        ),
        # torchattacks' CW always stops early once the summed loss stops falling (checked every
        # steps/10); ours with abort_early uses Carlini's stricter 0.01%-progress rule.
        "cw2_abort": (
            lambda: CW2(
                kappa=0, c0=1.0, lr=0.01, steps=args.cw_steps, binary_steps=1, abort_early=True, targeted=False
            )(model, x, y),
            lambda: torchattacks.CW(model, c=1.0, kappa=0, steps=args.cw_steps, lr=0.01)(x, y),
        ),
        # Ours running every step, against the same torchattacks run: an upper bound on our cost.
        "cw2_no_abort": (
            lambda: CW2(
                kappa=0, c0=1.0, lr=0.01, steps=args.cw_steps, binary_steps=1, abort_early=False, targeted=False
            )(model, x, y),
            lambda: torchattacks.CW(model, c=1.0, kappa=0, steps=args.cw_steps, lr=0.01)(x, y),
        ),
    }
    if args.compile:
        fast = torch.compile(model)
        runs["pgd_10_compiled"] = (
            lambda: rechecked(model, PGD(eps=eps, step=step, steps=k).run(fast, x, y), y).x_adv,
            runs["pgd_linf_10"][1],
        )
    times = {name: ([], []) for name in runs}
    floor = []
    for fn in (bare_passes, *[f for pair in runs.values() for f in pair]):
        fn()  # warm-up
    for r in range(args.repeats):
        floor.append(timed(bare_passes, device))
        for name, pair in runs.items():
            for side in _order(r):
                times[name][side].append(timed(pair[side], device))
    aa_model = _trained_model(args.aa_epochs, device)
    test = MNIST5k().load("test")
    pick = torch.randperm(len(test.y), generator=torch.Generator().manual_seed(0))[: args.aa_batch]
    x_aa, y_aa = test.x[pick].to(device), torch.as_tensor(test.y[pick]).to(device)
    aa = _autoattack_pair(aa_model, x_aa, y_aa, 0.1, args.aa_queries)
    times["autoattack"] = ([], [])
    for r in range(args.aa_repeats):
        for side in _order(r):
            times["autoattack"][side].append(timed(aa[side], device))
    print(
        f"model: {args.model}, batch {tuple(x.shape)}, eps {eps:.4f}, device {_device_name(device)}, "
        f"threads {torch.get_num_threads()}, median of {args.repeats}"
    )
    print(f"{'attack':<14}{'ours (s)':>10}{'torchattacks (s)':>18}{'ratio':>8}")
    for name, (ours, theirs) in times.items():
        o, t = statistics.median(ours), statistics.median(theirs)
        print(f"{name:<14}{o:>10.3f}{t:>18.3f}{o / t:>8.2f}")
    robust = [_accuracy(aa_model, run(), y_aa) for run in aa]
    print(
        f"autoattack: trained CNN ({args.aa_epochs} epochs, clean accuracy {_accuracy(aa_model, x_aa, y_aa):.3f}), "
        f"{args.aa_batch} test images, eps 0.1, median of {args.aa_repeats}; robust accuracy ours {robust[0]:.4f}, "
        f"torchattacks {robust[1]:.4f}"
    )
    bare = statistics.median(floor)
    pgd = statistics.median(times["pgd_linf_10"][0])
    print(f"PGD-{k} / {k} bare forward+backward passes: {pgd:.3f} / {bare:.3f} = {pgd / bare:.2f}")
    print()
    order = torch.randperm(len(test.y), generator=torch.Generator().manual_seed(1))
    x_eval, y_eval = test.x[order].to(device), torch.as_tensor(test.y[order]).to(device)
    _early_exit(aa_model, x_eval[: args.eval_images], y_eval[: args.eval_images], args.repeats, device)
    print()
    _seeded_noise(3 * args.repeats, device)
    _square_noise(aa_model, x_eval[: args.square_images], y_eval[: args.square_images], args.square_queries, device)


if __name__ == "__main__":
    main()
