"""Train six defenses on offline MNIST-5k with one shared budget and compare white-box and
gradient-free robustness; time our Lightning training loop against a plain PyTorch loop.

    python bench/defenses.py [--epochs 12] [--test-size 500] [--queries 1000] [--quick]
    python bench/defenses.py --costly [--rc-samples 1000] [--rc-val 500] [--costly-test 100] [--quick]
    python bench/defenses.py ... --trainer gpu [--set KEY=VALUE ...]

Per defense (standard, pgd_at, trades, fgsm_at, distillation, igr; each with its config's defaults,
the default optimiser and ``--epochs`` epochs on the 3500 training images) it prints the clean
accuracy and the accuracy under PGD-40 (eps 0.3, step 0.01, random start) and under Square
(eps 0.3, ``--queries`` queries, gradient-free) on ``--test-size`` test images (an equal share of
each class). Accuracy under an attack counts a sample only if it is classified correctly both
clean and attacked. Gradient masking (DD, IGR) shows up as PGD accuracy well above Square's.
Targets (issue 4): PGD-AT and TRADES >= 50% under PGD-40, standard < 15%.

Then it times one training epoch of pgd_at through our ``Trainer`` (validation, checkpointing,
logger and progress bar off) and through a plain loop doing the same work (PGD-7 examples in eval
mode, forward/backward on them, Adam step, same data loader), interleaved, median of
``--repeats``; goal: ratio <= 1.1. ``--quick`` shrinks everything for a smoke test.

``--costly`` measures the costly defenses at their defaults instead (issue 17), each trained for 4 batches:
RC's radius search with early decisions against one counting every vote (``--rc-samples`` per image on the
``--rc-val`` validation images; the same radius), and ``evaluate.py`` on ``--costly-test`` test images of rt, eit
and pd under the default attacks, with the expected cost the run printed after its first batch.

``--trainer gpu`` trains and evaluates on the GPU (``trainer=gpu``; the table's attacks and the plain loop run there
too), and each ``--set KEY=VALUE`` is added to every training and evaluation run's overrides.
"""

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

import robustlab
from robustlab.attacks import PGD, Square
from robustlab.cli import compose_config
from robustlab.data import MNIST5k
from robustlab.train import train
from robustlab.utils import timed

DEFENSES = ["standard", "pgd_at", "trades", "fgsm_at", "distillation", "igr"]


def _runs(args) -> list[str]:
    """The overrides every training and evaluation run of the bench gets: the trainer and ``--set``'s."""
    return [f"trainer={args.trainer}", *args.set]


def _device(args) -> torch.device:
    return torch.device("cuda" if args.trainer == "gpu" else "cpu")


def robust_accuracy(model, attack, x, y, seeds, batch: int = 250) -> tuple[float, float]:
    """Share of samples correct both clean and under ``attack``, and the attack's seconds."""
    robust = 0

    def run():
        nonlocal robust
        for i in range(0, len(x), batch):
            xb, yb, sb = x[i : i + batch], y[i : i + batch], seeds[i : i + batch]
            result = attack.run(model, xb, yb, seeds=sb)
            robust += int(((model(xb).argmax(1) == yb) & (result.logits.argmax(1) == yb)).sum())

    seconds = timed(run, x.device)
    return robust / len(x), seconds


def defense_table(args, out: Path) -> None:
    test, device = MNIST5k().load("test"), _device(args)
    x, y = test.x[: args.test_size].to(device), torch.as_tensor(test.y[: args.test_size]).to(device)
    seeds = torch.arange(len(y), device=device)
    pgd = PGD(eps=0.3, step=0.01, steps=40, random_start=True)
    square = Square(eps=0.3, n_queries=args.queries)
    print(
        f"MNIST-5k, MNIST CNN, {args.epochs} epoch(s) on {args.train_size or 3500} images each; "
        f"{len(x)} test images; threads {torch.get_num_threads()}",
        flush=True,
    )
    print(
        f"{'defense':<14}{'clean':>8}{'PGD-40':>9}{'Square':>9}{'train s':>9}{'PGD s':>8}{'Square s':>10}", flush=True
    )
    for name in DEFENSES:
        overrides = [
            f"defense={name}",
            f"trainer.max_epochs={args.epochs}",
            "logger=none",
            "attack=[]",
            "test=false",
            "++trainer.enable_progress_bar=false",
            "++trainer.enable_model_summary=false",
            f"paths.output_dir={out / name}",
            *_runs(args),
        ]
        if args.train_size:
            overrides.append(f"data.train_size={args.train_size}")
        summary = {}
        seconds = timed(lambda: summary.update(train(compose_config("train", overrides))))
        model = robustlab.load_model(summary["checkpoint"]).to(device)
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean().item()
        pgd_acc, pgd_s = robust_accuracy(model, pgd, x, y, seeds)
        sq_acc, sq_s = robust_accuracy(model, square, x, y, seeds)
        print(
            f"{name:<14}{clean:>8.3f}{pgd_acc:>9.3f}{sq_acc:>9.3f}{seconds:>9.0f}{pgd_s:>8.0f}{sq_s:>10.0f}", flush=True
        )


def overhead(args) -> None:
    import lightning as L

    from robustlab.defenses import PGDAdversarialTraining

    cfg = compose_config(
        "train",
        [
            "defense=pgd_at",
            "logger=none",
            "attack=[]",
            "trainer.max_epochs=1",
            "++trainer.enable_progress_bar=false",
            "++trainer.enable_model_summary=false",
            *([f"data.train_size={args.train_size}"] if args.train_size else []),
            *_runs(args),
        ],
    )
    device = _device(args)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")

    def lightning_epoch() -> float:
        L.seed_everything(0, verbose=False)
        module = instantiate(cfg.defense, net=instantiate(cfg.model), optimizer=instantiate(cfg.optimizer))
        assert isinstance(module, PGDAdversarialTraining)
        trainer = instantiate(cfg.trainer, limit_val_batches=0, logger=False, enable_checkpointing=False, callbacks=[])
        return timed(lambda: trainer.fit(module, train_dataloaders=datamodule.train_dataloader()), device)

    def plain_epoch() -> float:
        L.seed_everything(0, verbose=False)
        model = instantiate(cfg.model).to(device)
        optimizer = instantiate(cfg.optimizer)(params=model.parameters())
        attack = instantiate(cfg.defense.attack)

        def epoch():
            model.train()
            for x, y, _ in datamodule.train_dataloader():
                x, y = x.to(device), y.to(device)
                model.eval()
                x_adv = attack(model, x, y)
                model.train()
                loss = F.cross_entropy(model(x_adv), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        return timed(epoch, device)

    lightning_epoch(), plain_epoch()  # warm-up
    ours, plain = [], []
    for _ in range(args.repeats):
        ours.append(lightning_epoch())
        plain.append(plain_epoch())
    ours_s, plain_s = statistics.median(ours), statistics.median(plain)
    print(
        f"\npgd_at, one epoch ({len(datamodule.train_dataloader())} batches of {datamodule.batch_size}), "
        f"median of {args.repeats}: Lightning {ours_s:.2f}s, plain loop {plain_s:.2f}s, "
        f"ratio {ours_s / plain_s:.3f} (goal <= 1.1)",
        flush=True,
    )


def _quick_checkpoint(defense: str, out: Path, *overrides: str) -> str:
    """``defense`` trained on 4 batches of one epoch (no test stage); its checkpoint."""
    args = [f"defense={defense}", "++trainer.max_epochs=1", "++trainer.limit_train_batches=4", "test=false"]
    args += ["logger=none", "++trainer.enable_progress_bar=false", "++trainer.enable_model_summary=false"]
    return train(compose_config("train", [*args, *overrides, f"paths.output_dir={out / defense}"]))["checkpoint"]


def _counted_within(vote, loader, radius: float, seed: int, clean: float, tolerance: float) -> bool:
    """``rc.vote_within`` without its shortcuts: every vote of every validation image counted."""
    gen = torch.Generator().manual_seed(seed)
    correct = sum(int((vote.votes(b[0], radius, gen).argmax(1) == b[1]).sum()) for b in loader)
    return clean - correct / len(loader.dataset) <= tolerance


def costly(args, out: Path) -> None:
    import contextlib
    import io

    from torch.utils.data import DataLoader

    from robustlab.checkpoint import build_model, read_checkpoint
    from robustlab.defenses import rc
    from robustlab.evaluate import evaluate

    ckpt = _quick_checkpoint("rc", out, "defense.search=false", f"defense.n_samples={args.rc_samples}", *_runs(args))
    vote = build_model(read_checkpoint(ckpt)).eval().to(_device(args))
    datamodule = MNIST5k(val_size=args.rc_val)
    datamodule.setup("fit")
    loader = DataLoader(datamodule.val_set, batch_size=250)
    with torch.no_grad():
        radius = {}
        early = timed(lambda: radius.update(early=rc.search_radius(vote, loader, 0.0, 0.3, 0.01, 0.01)))
        decided_early, rc.vote_within = rc.vote_within, _counted_within  # the same bisection, every vote counted
        try:
            counted = timed(lambda: radius.update(counted=rc.search_radius(vote, loader, 0.0, 0.3, 0.01, 0.01)))
        finally:
            rc.vote_within = decided_early
    print(
        f"rc radius search, {args.rc_samples} samples on {len(datamodule.val_set)} validation images: early decisions "
        f"{early:.1f} s (radius {radius['early']}), every vote counted {counted:.1f} s (radius {radius['counted']}), "
        f"ratio {early / counted:.2f}",
        flush=True,
    )
    for defense in ("rt", "eit", "pd"):
        ckpt = _quick_checkpoint(defense, out, *_runs(args))
        overrides = [f"ckpt={ckpt}", f"data.test_size={args.costly_test}", "logger=none", "progress=false"]
        overrides += _runs(args)
        overrides.append(f"paths.output_dir={out / defense / 'eval'}")
        printed, report = io.StringIO(), {}
        with contextlib.redirect_stdout(printed):
            seconds = timed(lambda: report.update(evaluate(compose_config("eval", overrides))))
        notice = next((line for line in printed.getvalue().splitlines() if line.startswith("expected cost")), "none")
        accuracy = {name: f"{r['robust_accuracy']:.3f}" for name, r in report["attacks"].items()}
        print(
            f"{defense}: evaluate.py on {args.costly_test} test images, default attacks: {seconds:.1f} s; attack "
            f"seconds { ({k: round(v, 1) for k, v in report['timings']['attacks'].items()}) }; robust accuracy "
            f"{accuracy}; notice after the first batch: {notice}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train-size", type=int, default=None, help="training images (default: all 3500)")
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--queries", type=int, default=1000, help="Square's query budget per image")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per loop for the overhead ratio")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 500 images, 50 test images, 50 queries")
    parser.add_argument("--skip-table", action="store_true", help="only measure the Lightning overhead")
    parser.add_argument("--costly", action="store_true", help="only the costly defenses: rc, rt, eit, pd")
    parser.add_argument("--rc-samples", type=int, default=1000, help="RC votes per image in --costly")
    parser.add_argument("--rc-val", type=int, default=500, help="validation images of RC's search in --costly")
    parser.add_argument("--costly-test", type=int, default=100, help="test images per defense in --costly")
    parser.add_argument("--trainer", choices=("cpu", "gpu"), default="cpu", help="configs/trainer of every run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.train_size, args.test_size, args.queries, args.repeats = 1, 500, 50, 50, 1
        args.rc_samples, args.rc_val, args.costly_test = 100, 100, 20
    os.environ.setdefault("WANDB_MODE", "offline")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as out:
        if args.costly:
            costly(args, Path(out))
            return
        if not args.skip_table:
            defense_table(args, Path(out))
    overhead(args)


if __name__ == "__main__":
    main()
