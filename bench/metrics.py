"""Overhead and peak memory of robustlab's metrics under PGD-10 on MNIST-5k, in one run (issue 5).

    python bench/metrics.py [--n 1000] [--ckpt PATH] [--epochs 1] [--repeats 5] [--quick]

Trains DEEPSEC's MNIST CNN (defense=standard, ``--epochs`` on MNIST-5k; training saves its coverage profile) unless
``--ckpt`` is given, then times ``robustlab.evaluate.evaluate`` on the first ``--n`` test images under PGD-10
(configs/attack/pgd_linf.yaml with steps=10: linf, eps 0.3, step 0.01, random start, every step:
``early_stop=false``, since every metric but robust accuracy reads the final iterates): with robust accuracy only
(and, on its own row, with the early exit such a run gets by default); with the full suite (every configs/metric AUE
metric, suite=coverage, suite=structure) without the two boundary searches EBD and EBD-2, and their ratio (goal <=
1.15x). These runs write report.json alone (``pages=false``); two more rows draw report.html / report.md too, whose
cost bench/report.py measures on its own. One row per piece (AUE metrics, coverage, ENI, neuron
sensitivity/uncertainty); and EBD and EBD-2 as their own rows (each is itself an attack-sized search: EBD a line
search along 20 directions, EBD-2 a BIM run towards every other class). Each row is the fastest of ``--repeats``
interleaved runs (EBD and EBD-2: one run). A warm-up run, outside the timings, caches the coverage profile
(``--ckpt``: next to it). A last row times, as bare model calls, the forward passes the suite's definitions require
on top of robust accuracy: ENI's noisy copies (``samples=1``), RGB's blurred and RIC's JPEG-compressed successful
examples (the layer readers take the outputs of PGD's own passes, so the adversarial set costs none); with the
robust-accuracy row it gives the ratio no implementation of these metrics can go below.

Then peak RSS (ru_maxrss of a fresh subprocess per cell) of the coverage metrics (KMNCov, NBCov, SNACov,
TKNCov), and of the suite's per-sample metrics (coverage, AUE, ENI, neuron sensitivity/uncertainty on
one-step FGSM examples), streamed over 1k and 10k images (the 5000 MNIST-5k images, cycled), and the
10k - 1k difference (goal: flat), next to the bytes held by all metric states, which do not depend on the
number of images.
"""

import argparse
import contextlib
import io
import logging
import os
import resource
import subprocess
import sys
import tempfile
import warnings

import torch

from robustlab.attacks import PGD
from robustlab.checkpoint import load_model
from robustlab.cli import CONFIG_DIR, compose_config
from robustlab.data import MNIST5k
from robustlab.evaluate import evaluate
from robustlab.metrics import RGB, RIC
from robustlab.success import attack_success
from robustlab.train import train
from robustlab.utils import timed

METRICS = "metric=[acac,actc,aldp,ass,psd,nte,rgb,ric]"
NO_EXTRA = [
    "evaluations.corruption=null",
    "evaluations.defense=null",
    "evaluations.curves=null",
    "evaluations.checks.costly=false",
]
S = "evaluations.structure."
FULL = ["suite=full", *NO_EXTRA, S + "ebd=false", S + "ebd2=false"]
RUNS = {  # name: overrides on top of PGD-10 with robust accuracy only
    "robust accuracy only": [],
    "robust accuracy only, early exit": ["attack.pgd_linf.early_stop=true"],
    "full suite without EBD and EBD-2": FULL,
    "robust accuracy only, with pages": ["pages=true"],
    "full suite without EBD and EBD-2, with pages": [*FULL, "pages=true"],
    "EBD alone (structure, only ebd on)": ["suite=structure", S + "ebd2=false", S + "eni=false"],
    "EBD-2 alone (structure, only ebd2 on)": ["suite=structure", S + "ebd=false", S + "eni=false"],
    "AUE metrics": [METRICS],
    "coverage": ["suite=coverage"],
    "ENI (+ neuron sens./unc.)": ["suite=structure", S + "ebd=false", S + "ebd2=false"],
    "neuron sensitivity/uncertainty": ["suite=structure", S + "ebd=false", S + "ebd2=false", S + "eni=false"],
}


def compose(name: str, out: str, overrides: list[str]):
    return compose_config(name, [f"paths.output_dir={out}", "logger=none", *overrides])


def timed_eval(ckpt: str, n: int, overrides: list[str]) -> float:
    base = ["attack=[pgd_linf]", "attack.pgd_linf.steps=10", "attack.pgd_linf.early_stop=false", "progress=false"]
    base += ["pages=false", f"data.test_size={n}", f"ckpt={ckpt}"]  # report.json only: the "with pages" rows add them
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        cfg = compose("eval", out, [*base, *overrides])
        return timed(lambda: evaluate(cfg))


def floor(ckpt: str, n: int, repeats: int, batch: int = 250) -> float:
    """Seconds of the forward passes (and transforms) the suite's metrics need by definition, as bare model calls
    on PGD-10's examples of the first ``n`` test images, in batches of ``batch`` (the evaluation's): the fastest
    of ``repeats``. The layer readers need none: they take the outputs of PGD's own last pass."""
    model, test = load_model(ckpt), MNIST5k().load("test")
    x, y = test.x[:n], torch.as_tensor(test.y[:n]).long()
    attack, sets = PGD(eps=0.3, step=0.01, steps=10), []
    for start in range(0, n, batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        x_adv = attack(model, xb, yb, seeds=torch.arange(start, start + len(xb)))
        with torch.no_grad():
            ok = attack_success(model(xb).argmax(1), model(x_adv).argmax(1), yb)
        sets.append((xb, x_adv, ok))
    rgb, ric = RGB(), RIC()

    def passes() -> None:
        with torch.no_grad():
            for xb, x_adv, ok in sets:
                model((xb + 0.3 * (2 * torch.rand_like(xb) - 1)).clamp(0, 1))
                model(rgb.transform(x_adv[ok]))
                model(ric.transform(x_adv[ok]))

    return min(timed(passes) for _ in range(repeats))


def stream_rss(ckpt: str, n: int, suite: bool) -> tuple[int, int]:
    """Subprocess body: stream ``n`` cycled MNIST-5k images through the metrics; peak RSS in KiB and the
    bytes of all metric states."""
    import torch.nn.functional as F
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from robustlab.metrics import (
        ENI,
        KMNCov,
        NBCov,
        NeuronProfile,
        NeuronSensitivity,
        NeuronUncertainty,
        SNACov,
        TKNCov,
    )
    from robustlab.metrics.coverage import layer_outputs, neuron_values, profile_path, select_layers

    model = load_model(ckpt)
    layers = select_layers(model)
    profile = NeuronProfile.load(profile_path(ckpt)).restrict(layers)
    coverage = [KMNCov(profile, 10), NBCov(profile), SNACov(profile), TKNCov(profile, 2)]
    aue = (
        [
            instantiate(node)
            for f in sorted((CONFIG_DIR / "metric").glob("*.yaml"))
            for node in OmegaConf.load(f).values()
        ]
        if suite
        else []
    )
    eni, sens, unc = ENI(eps=0.3, samples=10), NeuronSensitivity(list(layers)), NeuronUncertainty(list(layers))
    data = MNIST5k()
    pool = [data.load("train"), data.load("test")]
    xs, ys = torch.cat([p.x for p in pool]), torch.cat([torch.as_tensor(p.y) for p in pool]).long()
    for start in range(0, n, 250):
        idx = torch.arange(start, min(start + 250, n)) % len(xs)
        x, y = xs[idx], ys[idx]
        for m in coverage:
            m.update(layer_outputs(model, x, layers, reduce=neuron_values))
        if suite:
            xr = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
            x_adv = (x + 0.3 * grad.sign()).clamp(0, 1)
            with torch.no_grad():
                clean_logits, adv_logits = model(x), model(x_adv)
            for m in aue:
                m.update(model, x, x_adv, y, clean_logits, adv_logits)
            clean = layer_outputs(model, x, layers)
            sens.update(clean, layer_outputs(model, x_adv, layers))
            unc.update(clean)
            eni.update(model, x, y, idx)
    metrics = coverage + (aue + [eni, sens, unc] if suite else [])
    for m in metrics:
        m.compute()
    states = [v for m in metrics for v in m.metric_state.values()]
    tensors = [t for v in states for t in (v if isinstance(v, list) else [v])]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, sum(t.numel() * t.element_size() for t in tensors)


def rss(ckpt: str, n: int, suite: bool) -> tuple[int, int]:
    """Through ``sh ... & wait``: a child spawned straight from this big process inherits its ru_maxrss."""
    cmd = ["/bin/sh", "-c", '"$@" & wait $!', "sh", sys.executable, __file__, "--rss", str(n), "--ckpt", ckpt]
    cmd += ["--suite"] if suite else []
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    peak, state = out.stdout.split()[-2:]
    return int(peak), int(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="test images evaluated")
    parser.add_argument("--ckpt", help="checkpoint to evaluate (default: train one)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row but EBD's; the fastest is kept")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 images, 500 training images")
    parser.add_argument("--memory-only", action="store_true", help="skip the timings")
    parser.add_argument("--rss", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--suite", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss:
        print(*stream_rss(args.ckpt, args.rss, args.suite))
        return
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    n, sizes = (50, (100, 1000)) if args.quick else (args.n, (1000, 10000))
    workdir = tempfile.mkdtemp(prefix="bench_metrics_")
    ckpt = args.ckpt
    if ckpt is None:
        extra = ["data.train_size=500"] if args.quick else []
        cfg = compose(
            "train",
            workdir,
            [
                "defense=standard",
                f"trainer.max_epochs={args.epochs}",
                "attack=[]",
                "test=false",
                "+trainer.enable_progress_bar=false",
                *extra,
            ],
        )
        with contextlib.redirect_stdout(io.StringIO()):
            ckpt = train(cfg)["checkpoint"]
    timed_eval(ckpt, n, ["suite=coverage"])  # warm-up; caches the coverage profile
    if not args.memory_only:
        timings(ckpt, n, args.repeats)
    memory(ckpt, sizes)


def timings(ckpt: str, n: int, repeats: int) -> None:
    searches = [name for name in RUNS if name.startswith("EBD")]
    t = {name: float("inf") for name in RUNS}
    for _ in range(repeats):  # every row but the two searches interleaved, fastest kept; the searches once
        for name, overrides in RUNS.items():
            if name not in searches:
                t[name] = min(t[name], timed_eval(ckpt, n, overrides))
    t.update({name: timed_eval(ckpt, n, RUNS[name]) for name in searches})
    base, full = t["robust accuracy only"], t["full suite without EBD and EBD-2"]
    paged = t["full suite without EBD and EBD-2, with pages"] / t["robust accuracy only, with pages"]
    print(
        f"PGD-10 (linf, eps 0.3, step 0.01, random start), {n} MNIST-5k test images, DEEPSEC MNIST CNN, "
        f"threads {torch.get_num_threads()}, fastest of {repeats} (EBD rows: one run), evaluate() wall time"
    )
    print(f"{'run':<50}{'seconds':>9}{'ratio':>8}{'extra s':>9}")
    for name, s in t.items():
        print(f"{name:<50}{s:>9.2f}{s / base:>8.2f}{s - base:>9.2f}")
    pieces = {
        "AUE metrics": t["AUE metrics"] - base,
        "coverage": t["coverage"] - base,
        "ENI": t["ENI (+ neuron sens./unc.)"] - t["neuron sensitivity/uncertainty"],
        "neuron sensitivity/uncertainty": t["neuron sensitivity/uncertainty"] - base,
    }
    print(
        f"overhead ratio, EBD and EBD-2 excluded: {full / base:.3f}x (goal <= 1.15x; with report.html / report.md "
        f"in both runs {paged:.3f}x); pieces (extra s): " + ", ".join(f"{k} {v:.2f}" for k, v in pieces.items())
    )
    least = floor(ckpt, n, repeats)
    print(
        f"floor: the suite's own forward passes (ENI's noisy copies, RGB's and RIC's transformed successful "
        f"examples) as bare model calls {least:.2f} s, a ratio of at least {(base + least) / base:.3f}x"
    )


def memory(ckpt: str, sizes: tuple[int, int]) -> None:
    print(
        f"peak RSS (MiB, fresh process per cell) and metric state (bytes), streamed MNIST-5k images: "
        f"{sizes[0]} / {sizes[1]} / difference"
    )
    for label, suite in (("coverage metrics", False), ("suite metrics (cov+AUE+ENI+NS/NU)", True)):
        (small, s_small), (big, s_big) = rss(ckpt, sizes[0], suite), rss(ckpt, sizes[1], suite)
        print(
            f"{label:<40}{small / 1024:>9.1f}{big / 1024:>9.1f}{(big - small) / 1024:>+9.1f}   "
            f"state {s_small} / {s_big} bytes"
        )


if __name__ == "__main__":
    main()
