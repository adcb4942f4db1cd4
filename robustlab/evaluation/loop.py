"""The evaluation loop: one Lightning callback that, on every validation and/or test batch, runs the attacks,
builds the :class:`~robustlab.evaluation.record.BatchRecord` and hands it to every evaluation."""

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from robustlab.attacks.adaptive import EOT
from robustlab.attacks.base import Attack, AttackResult, innermost, variant
from robustlab.errors import RobustlabError
from robustlab.evaluation.base import Context, Evaluation
from robustlab.evaluation.journal import Journal
from robustlab.evaluation.record import CLEAN, BatchRecord, LayerRequests
from robustlab.models.base import preprocessors, randomized
from robustlab.progress import Progress, clock
from robustlab.success import goal_met
from robustlab.utils import eval_mode, timed

STAGES = {"validate": "val", "test": "test"}


def classifier(module: nn.Module) -> nn.Module:
    """The network a robustlab LightningModule wraps (``.model``), whose layer names evaluations use."""
    return getattr(module, "model", module)


def example_seeds(idx: torch.Tensor, seed: int) -> torch.Tensor:
    """Per-example seeds from the sample indices and the run's ``seed``: ``idx`` itself for seed 0, else ``idx``
    XOR a 32-bit hash of ``seed``; each seed starts the example's :class:`~robustlab.rng.Streams` stream."""
    return idx.long() ^ ((int(seed) * 0x85EBCA6B) & 0xFFFFFFFF)


def summed(value: float, device: torch.device) -> float:
    """``value`` summed over all processes."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    total = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item()


#: Autocast dtypes of the ``precision`` settings (Lightning's names) that attacks accept; ``None``: float32.
AUTOCAST = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16}
AUTOCAST |= {"16-mixed": torch.float16, "16": torch.float16}


def autocast_dtype(precision: str | int) -> torch.dtype | None:
    """The dtype attack gradient steps run in under ``precision`` (``None``: float32, no autocast)."""
    if str(precision) not in AUTOCAST:
        raise RobustlabError(
            f"precision={precision} is not a precision attacks can run in (their successes are re-checked in "
            "float32 with the model's own weights)",
            f"use one of {', '.join(AUTOCAST)}",
        )
    return AUTOCAST[str(precision)]


def rechecked(model: nn.Module, result: AttackResult, y: torch.Tensor) -> AttackResult:
    """``result`` of a reduced-precision run with its logits recomputed in float32 (autocast off) and each success
    kept only where the float32 prediction still meets the goal (:func:`~robustlab.success.goal_met`); the pass is
    billed to the attack."""
    checked = {}

    def recheck() -> None:
        with torch.no_grad(), torch.autocast(y.device.type, enabled=False):
            checked["logits"] = model(result.x_adv).float()
        checked["success"] = result.success & goal_met(checked["logits"].argmax(1), y, result.target)

    seconds = timed(recheck, y.device)
    return dataclasses.replace(result, **checked, seconds=result.seconds + seconds)


def compiled(module: nn.Module, backend: str | bool) -> nn.Module:
    """``module`` compiled with ``torch.compile`` (``backend``: its name, or ``True`` for the default) for the attacks'
    passes. Refused for a randomised model (a compiled graph draws other random numbers) and for one with
    preprocessing (BPDA's hooks, added per call, are not seen by a compiled graph)."""
    if randomized(module) or preprocessors(module):
        raise RobustlabError(
            "compile= is for deterministic models without preprocessing; this one is "
            + ("randomised" if randomized(module) else "preprocessed (BPDA hooks its transforms per call)"),
            "drop compile=",
        )
    return torch.compile(module, **({} if backend is True else {"backend": backend}))


#: An evaluation expected to run longer than this (seconds), judged on its first batch, says so with the flags
#: that make it cheaper.
NOTICE_S = 180


def cost_notice(progress: Progress, attacks: Mapping[str, Attack], batch_size: int, randomised: bool) -> str | None:
    """After the first batch: the whole run's expected time, if above :data:`NOTICE_S`, with its costliest task and
    the settings that cut it (fewer images; for an EOT attack fewer draws; for an iterative one fewer steps)."""
    first = sum(progress.spent.values())
    expected = first * progress.batches
    if expected <= NOTICE_S or not first:
        return None
    task = max(progress.spent, key=progress.spent.get)
    share = progress.spent[task] / first
    images = max(1, int(NOTICE_S / first * batch_size))
    cheaper = [f"data.test_size={images} (about {NOTICE_S // 60} min)"]
    name = task.removeprefix("attack ")
    attack = attacks.get(name) if task.startswith("attack ") else None
    if attack is not None:
        if isinstance(attack, EOT):
            cheaper.append(f"eot_samples={max(1, attack.n // 4)} (now {attack.n})")
        steps = getattr(innermost(attack), "steps", None)
        if isinstance(steps, int) and steps > 1:
            cheaper.append(f"attack.{name}.steps={max(1, steps // 4)} (now {steps})")
    if randomised:
        cheaper.append("eval_draws=3")
    return (
        f"expected cost: about {clock(expected)} for {progress.batches} batch(es) of {batch_size} ({clock(first)} "
        f"for the first, {100 * share:.0f}% of it {task}); cheaper: {', '.join(cheaper)}"
    )


class EvaluationLoop(L.Callback):
    """Runs ``attacks`` on every batch of ``stages`` and feeds ``evaluations`` (``{name: Evaluation}``; each
    one's results go to ``results[stage][name]``, or to its own ``sections``).

    Per batch it runs the evaluated module in eval mode (each submodule's own mode restored afterwards): the
    clean logits come from the test step itself, hooked when evaluations read layer outputs; each attack runs
    once, seeded per example from ``seed`` and the sample index (so results do not depend on batch size or
    process count), and hands back its images, logits, success and counts. With a reduced ``precision`` (Lightning's
    names: ``bf16-mixed``, ``16-mixed``) the attacks run under autocast and every success is re-checked in float32
    (:func:`rechecked`), and clean logits that the step computed in half precision are computed again in float32;
    ``compile`` (``True`` or a backend name) runs the attacks on a ``torch.compile``-d model, their successes re-checked
    on the model itself. A randomised model
    (:func:`~robustlab.models.base.randomized`) is scored at the test stage on ``draws`` independent forward
    passes of every image set (:meth:`BatchRecord.draw_logits`). No evaluation reads another's state.
    ``timings`` sums, over processes, the seconds each attack and evaluation took. Needs
    ``Trainer(inference_mode=False)`` when there are attacks."""

    def __init__(
        self,
        attacks: Mapping[str, Attack] | None = None,
        evaluations: Mapping[str, Evaluation] | None = None,
        stages: tuple[str, ...] = ("test",),
        seed: int = 0,
        progress: bool = True,
        baseline: nn.Module | None = None,
        draws: int = 1,
        journal: Mapping[str, Any] | None = None,
        resume: bool = False,
        precision: str | int = "32-true",
        compile: bool | str = False,
    ):
        super().__init__()
        self.attacks = dict(attacks or {})
        self.evaluations = dict(evaluations or {})
        for name, evaluation in self.evaluations.items():
            if not isinstance(evaluation, Evaluation):
                raise RobustlabError(
                    f"evaluation {name!r} is a {type(evaluation).__name__}, not an Evaluation",
                    "give evaluations robustlab.evaluation.Evaluation subclasses",
                )
            evaluation.name = evaluation.name or name
        self.stages, self.seed, self.progress, self.baseline = tuple(stages), int(seed), progress, baseline
        self.draws = int(draws)
        self.precision, self.compile = str(precision), compile
        self._dtype = autocast_dtype(precision)
        self._attacked: nn.Module | None = None
        self.results: dict[str, dict] = {}
        self.timings: dict[str, dict[str, float]] = {}
        self._requests = LayerRequests()
        self._capture = None
        self.journal_options, self.resume = journal, resume
        self.journal: Journal | None = None
        self.skipped = self._skip = 0
        self._rng = None
        self.early_stop: dict[str, bool] = {}
        self._running = self.attacks

    def _active(self, trainer: L.Trainer, stage: str) -> bool:
        return stage in self.stages and not trainer.sanity_checking

    def _start(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self._requests = LayerRequests()
        self._draws = self.draws if stage == "test" and randomized(module) else 1
        for attack in self.attacks.values():
            attack.reset(stage)
        self._running = self.resolve_early_stop(module)
        if not (self.compile and self.attacks):
            self._attacked = module
        elif getattr(self._attacked, "_orig_mod", None) is not module:  # compiled once, kept for later stages
            self._attacked = compiled(module, self.compile)
        if self.baseline is not None:
            self.baseline = self.baseline.to(module.device).eval()
        self._context = Context(
            trainer,
            module,
            classifier(module),
            trainer.datamodule,
            stage,
            self._running,
            self.seed,
            self.baseline,
            self._requests,
            self._draws,
        )
        for evaluation in self.evaluations.values():
            evaluation.setup(self._context)
        self._spent = {"attacks": dict.fromkeys(self.attacks, 0.0), "evaluations": dict.fromkeys(self.evaluations, 0.0)}
        batches = sum(trainer.num_test_batches if stage == "test" else trainer.num_val_batches)
        tasks = [f"attack {name}" for name in self.attacks] + list(self.evaluations)
        self._progress = Progress(batches, tasks, enabled=self.progress and stage == "test" and trainer.is_global_zero)
        if stage == "test" and self.journal_options is not None:
            self._open_journal(trainer)

    def resolve_early_stop(self, module: nn.Module) -> dict[str, Attack]:
        """The attacks as this stage runs them. An attack whose innermost attack has ``early_stop=None`` runs a copy
        with it on when no evaluation :attr:`~robustlab.evaluation.base.Evaluation.needs_final_iterates` and the model
        is not randomised (its noise comes from one global stream, so an example leaving the batch would change the
        draws of the others: the fooled set would agree only in distribution), else off. ``early_stop`` records the
        outcome for every white-box attack with the option."""
        on = not randomized(module) and not any(e.needs_final_iterates for e in self.evaluations.values())
        running, self.early_stop = {}, {}
        for name, attack in self.attacks.items():
            inner = innermost(attack)
            if attack.kind == "whitebox" and hasattr(inner, "early_stop"):  # not a transfer's run on its surrogate
                if inner.early_stop is None:
                    attack = variant(attack, early_stop=on)
                inner = innermost(attack)
                self.early_stop[name] = bool(inner.early_stop and getattr(inner, "keep_successful", True))
            running[name] = attack
        return running

    def _open_journal(self, trainer: L.Trainer) -> None:
        """This process's journal; on ``resume``, its evaluations' states, timings and batch count put back."""
        self.journal = Journal.of(self.journal_options, trainer.world_size, trainer.global_rank)
        self.skipped = self._skip = 0
        entry = self.journal.read() if self.resume else None
        if entry is None:
            return
        for name, evaluation in self.evaluations.items():
            evaluation.load_journal_state(entry["states"][name], self._context.device)
        self._spent = entry["spent"]
        self.skipped = self._skip = entry["batches"]
        self._rng = entry["rng"], entry["cuda_rng"]

    def _skipping(self, batch_idx: int) -> bool:
        """Whether the journal already holds ``batch_idx``; the RNG state is put back before the first batch
        that it does not, as an uninterrupted run had it there."""
        if batch_idx < self._skip:
            return True
        if self._rng is not None:
            torch.set_rng_state(self._rng[0])
            if self._rng[1]:
                torch.cuda.set_rng_state_all(self._rng[1])
            self._rng = None
        return False

    def _write_journal(self, batch_idx: int) -> None:
        states = {name: evaluation.journal_state() for name, evaluation in self.evaluations.items()}
        self.journal.write(batch_idx + 1, states, self._spent)

    def _batch_start(self, module) -> None:
        """Record the requested layers' outputs during the step's own clean forward pass."""
        if self._requests.layers:
            self._capture = self._requests.hooked()
            self._store = self._capture.__enter__()

    def _score_draws(self, module: nn.Module, record: BatchRecord) -> dict[str, torch.Tensor]:
        """``{image set: (D, B, classes)}`` logits of ``D`` draws of a randomised model: the step's clean pass and
        ``D - 1`` more for the clean images, ``D`` fresh passes for each attack's images."""
        with torch.no_grad():
            draws = {CLEAN: torch.stack([record.clean_logits, *(module(record.x) for _ in range(self._draws - 1))])}
            for name, result in record.attacks.items():
                draws[name] = torch.stack([module(result.x_adv) for _ in range(self._draws)])
        return draws

    def _end_capture(self) -> dict | None:
        """Remove the clean-pass hooks; the outputs they recorded, if any."""
        if self._capture is None:
            return None
        self._capture.__exit__(None, None, None)
        self._capture = None
        return self._store

    def _clean(self, module, outputs, x: torch.Tensor) -> tuple[torch.Tensor, dict | None]:
        """The clean logits and requested layer outputs: the step's own, or one (hooked) pass here when the
        step returned no logits."""
        store = self._end_capture()
        logits = outputs.get("logits") if isinstance(outputs, dict) else None
        if logits is None or logits.dtype in (torch.bfloat16, torch.float16):  # a mixed-precision step's: again
            self._batch_start(module)
            with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
                logits = module(x)
            store = self._end_capture()
        return logits, store

    def _attack(self, module: nn.Module, attack: Attack, x, y, seeds, clean_logits) -> AttackResult:
        """One attack's run on the batch; under a reduced precision (autocast) or on the compiled model, its
        successes re-checked on ``module`` itself in float32."""
        if self._dtype is None and self._attacked is module:
            if not self._requests.layers or randomized(module):  # a randomised model's layers: from fresh draws
                return attack.run(module, x, y, seeds=seeds, clean_logits=clean_logits)
            with self._requests.watching(module) as watch:
                return attack.run(module, x, y, seeds=seeds, clean_logits=clean_logits, watch=watch)
        with torch.autocast(x.device.type, dtype=self._dtype, enabled=self._dtype is not None):
            result = attack.run(self._attacked, x, y, seeds=seeds, clean_logits=clean_logits)
        return rechecked(module, result, y)

    def _batch(self, trainer, module, outputs, batch, stage: str) -> None:
        x, y, idx = batch[0], batch[1], batch[2]
        seeds = example_seeds(idx, self.seed)
        with eval_mode(module):
            clean_logits, store = self._clean(module, outputs, x)
            results = {}
            for name, attack in self._running.items():
                with self._progress.running(f"attack {name}"):
                    results[name] = self._attack(module, attack, x, y, seeds, clean_logits)
                self._spent["attacks"][name] += results[name].seconds
            record = BatchRecord(stage, x, y, idx, seeds, clean_logits, results, module, self._requests, self.baseline)
            if self._draws > 1:
                record.draws = self._score_draws(module, record)
            if store is not None:
                record.add_outputs(CLEAN, store)
            for name, result in results.items():
                if result.outputs is not None:
                    record.add_outputs(name, result.outputs[1], rows=result.outputs[0])
            for name, evaluation in self.evaluations.items():
                with self._progress.running(name):
                    start = time.perf_counter()
                    evaluation.update(record)
                    self._spent["evaluations"][name] += time.perf_counter() - start
        self._progress.next_batch()
        if self._progress.batch == 1 and stage == "test" and trainer.is_global_zero:
            notice = cost_notice(self._progress, self._running, len(x), self._draws > 1)
            if notice:
                print(notice, flush=True)

    def _finish(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self._progress.close()
        results, log, checks = {}, {}, []
        for name, evaluation in self.evaluations.items():
            value = evaluation.results()
            if value is None:
                continue
            results.update(value if evaluation.sections is not None else {evaluation.name: value})
            log.update({f"{STAGES[stage]}/{k}": v for k, v in evaluation.scalars(value).items()})
            checks += evaluation.checks(value)
        if checks:
            results["checks"] = results.get("checks", []) + checks
        self.results[stage] = results
        self.timings[stage] = {
            kind: {name: summed(s, module.device) for name, s in spent.items()} for kind, spent in self._spent.items()
        }
        if log:
            module.log_dict(log, sync_dist=False, rank_zero_only=False)

    def summary(self, stage: str = "test") -> list[str]:
        """One line per evaluation that has one, from ``results[stage]``."""
        results = self.results.get(stage, {})
        lines = []
        for evaluation in self.evaluations.values():
            value = {s: results[s] for s in evaluation.report_sections() if s in results}
            if value:
                line = evaluation.summary(value if evaluation.sections is not None else value[evaluation.name])
                lines += [line] if line else []
        return lines

    def on_exception(self, trainer, pl_module, exception):
        self._end_capture()

    def on_validation_epoch_start(self, trainer, pl_module):
        if self._active(trainer, "validate"):
            self._start(trainer, pl_module, "validate")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self._active(trainer, "validate"):
            self._batch_start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self._active(trainer, "validate"):
            self._batch(trainer, pl_module, outputs, batch, "validate")

    def on_validation_epoch_end(self, trainer, pl_module):
        if self._active(trainer, "validate"):
            self._finish(trainer, pl_module, "validate")

    def on_test_epoch_start(self, trainer, pl_module):
        if self._active(trainer, "test"):
            self._start(trainer, pl_module, "test")

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self._active(trainer, "test") and not self._skipping(batch_idx):
            self._batch_start(pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not self._active(trainer, "test"):
            return
        if batch_idx < self._skip:
            self._progress.next_batch()
            return
        self._batch(trainer, pl_module, outputs, batch, "test")
        if self.journal is not None:
            self._write_journal(batch_idx)

    def on_test_epoch_end(self, trainer, pl_module):
        if self._active(trainer, "test"):
            self._finish(trainer, pl_module, "test")
