"""Cheap evaluation checks: flags for an evaluation that should not be trusted, each with its evidence and a fix.

Sources: AutoAttack's ``checks.py`` (Croce & Hein 2020), "Indicators of Attack Failure" (Pintor et al., NeurIPS
2022) and "On Evaluating Adversarial Robustness" (Carlini et al. 2019). The model probes run on the split's first
32 test samples (a few forward passes of them); the per-example counts cover every batch. Results are reduced
over processes (counts summed, probe measurements maxed), so the verdicts are the same on one process or eight.
"""

from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn.functional as F

from robustlab.attacks.adaptive import straight_through
from robustlab.attacks.apgd import salted
from robustlab.attacks.base import innermost, random_like
from robustlab.evaluation.base import Context, Evaluation
from robustlab.evaluation.loop import summed
from robustlab.evaluation.record import BatchRecord
from robustlab.models.base import preprocessors, randomized

#: Largest |logit| difference between two passes, or between a sample alone and in its batch, taken as equal.
LOGIT_TOLERANCE = 1e-4
#: Uniform noise (in [0,1] pixel units) of the stability probe: below one 8-bit level.
NOISE = 1 / 255
#: Probability rows: non-negative and summing to 1 within this tolerance.
SUM_TOLERANCE = 1e-4
#: The model probes read the split's first PROBE samples (by index, wherever they fall under DDP), of which the
#: first SINGLES are also forwarded one by one in the batch-dependence probe.
PROBE, SINGLES = 32, 8
#: Salt of the stability probe's per-example noise seeds (apart from the attacks' streams).
NOISE_SALT = 0x5EED


def _relative(change: float) -> str:
    return f"{change:.3g} (relative)" if change > LOGIT_TOLERANCE else f"within {LOGIT_TOLERANCE:g} (relative)"


def entry(name: str, status: str, evidence: str, fix: str = "") -> dict:
    return {"name": name, "status": status, "evidence": evidence, "fix": fix}


def worst(*statuses: str) -> str:
    """The most severe of ``statuses`` ("pass" < "warn" < "fail"); "pass" for none."""
    return max(statuses, key=("pass", "warn", "fail").index, default="pass")


def reduced_max(value: float, device: torch.device) -> float:
    """``value``'s maximum over all processes."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.item()


@contextmanager
def counting_autograd():
    """Counts calls of ``torch.autograd.grad`` and ``torch.autograd.backward`` (``Tensor.backward`` goes through
    it) inside the block; yields a one-item list."""
    calls, grad, backward = [0], torch.autograd.grad, torch.autograd.backward

    def counted(fn):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            return fn(*args, **kwargs)

        return wrapper

    torch.autograd.grad, torch.autograd.backward = counted(grad), counted(backward)
    try:
        yield calls
    finally:
        torch.autograd.grad, torch.autograd.backward = grad, backward


class Checks(Evaluation):
    """``report.json["checks"]``: a list of ``{"name", "status": "pass" | "warn" | "fail", "evidence", "fix"}``.

    - ``randomised outputs`` (AutoAttack): two forward passes of the same batch differ by more than
      :data:`LOGIT_TOLERANCE`. Fail when the model does not declare it (``DefendedModel.randomized``): it is then
      attacked without EOT and scored on one draw; warn when declared but scored on one draw (``eval_draws=1``).
    - ``probability outputs`` (AutoAttack): every output row is non-negative and sums to 1 (softmax in the
      forward): fail, attacks and metrics expect logits.
    - ``zero or NaN input gradients`` (AutoAttack, Pintor): the share of probed examples whose cross-entropy
      gradient with respect to the input is all zero or not finite, taken as the attacks take it (through
      declared preprocessors by BPDA). Warn above 0, fail at 10% or more.
    - ``optimisation inside the forward`` (AutoAttack): the forward itself calls autograd: fail.
    - ``too few classes`` (AutoAttack): a DLR loss needs 3 classes, a targeted attack more classes than targets.
    - ``batch dependence`` (AutoAttack issues, Carlini): the first :data:`SINGLES` samples forwarded alone give
      other logits than in their batch (BatchNorm in train mode, cross-example layers): fail.
    - ``unstable predictions`` (Pintor): the share of clean-correct probed examples whose prediction flips
      under uniform noise of :data:`NOISE`. Warn at 1% or more (skipped for a randomised model).
    - ``step budget`` (Carlini): an iterative attack whose ``steps * step`` is below its ``eps`` cannot reach the
      edge of its ball from the clean point: warn.
    - ``black-box beats white-box`` (AutoAttack, Carlini): examples that a black-box attack broke and every
      white-box attack missed, over all batches. Warn for any, fail at 5% or more of the clean-correct examples:
      the gradients mislead (masking).
    - ``transfer failure`` (Pintor): a transfer attack's example fooled its surrogate but not the evaluated model
      (``AttackResult.surrogate_success``): warn for any; the transfer attack then says little about robustness.

    With ``costly`` (``suite=checks``) six more, from each iterative white-box attack rerun on the split's first
    :data:`~robustlab.evaluation.attack_checks.PROBE` samples (:class:`~robustlab.evaluation.attack_checks.
    AttackProbe`); each entry also gives ``seconds``, the time they took together:

    - ``more steps or restarts help`` (Carlini): 2x the steps with a second random start breaks examples the attack
      missed: warn for any, fail above 1 point of the clean-correct probed examples (and at least 3: one or two
      can fall to the second random start alone).
    - ``unconstrained attack fails`` (Pintor, Carlini): with eps covering the whole [0,1] box (and the step scaled
      alike) the attack misses an example it missed: fail.
    - ``random noise beats the attack`` (Carlini): uniform noise of the attack's budget fools an example the attack
      missed: warn for any, fail at 5% of those. Also for FGSM; skipped for a randomised model.
    - ``silent success`` (Pintor): an iterate of the attack's path (its forward passes, traced) was adversarial but
      the returned point is not: fail. Skipped for a randomised model.
    - ``zero or NaN gradients along the path`` (AutoAttack, Pintor): the attack's loss gradient is all zero or not
      finite at one of :data:`~robustlab.evaluation.attack_checks.PATH_GRADIENTS` iterates of the traced path: warn
      for any, fail at 10% of the traced examples. Skipped for a randomised model.
    - ``incomplete optimisation`` (Pintor): the best loss still rose over the last steps for examples the attack
      missed (:func:`~robustlab.evaluation.attack_checks.improving`): warn for any; fail at 10% of those (and 3)
      where 2x the steps also broke examples of that attack.
    """

    journaled = ("probe", "counts", "num_classes", "costly_counts")
    needs_final_iterates = False

    def __init__(self, costly: bool = False):
        super().__init__()
        self.costly = costly

    def setup(self, context: Context) -> None:
        self.model, self.device, self.draws = context.module, context.device, context.draws
        self.randomized, self.preprocessors = randomized(context.classifier), preprocessors(context.classifier)
        self.attacks, self.num_classes = context.attacks, context.num_classes
        self.probe = {
            "max_logit_change": 0.0,
            "probability_rows": 1.0,
            "zero_grad": 0.0,
            "nonfinite_grad": 0.0,
            "grad_examples": 0.0,
            "autograd_calls": 0.0,
            "batch_change": 0.0,
            "flips": 0.0,
            "stable_examples": 0.0,
        }
        self.counts = {"clean_correct": 0.0, "blackbox_only": 0.0, "surrogate_fooled": 0.0, "not_transferred": 0.0}
        self.attack_probe = None
        if self.costly:
            from robustlab.evaluation.attack_checks import AttackProbe

            self.attack_probe = AttackProbe(self.model, self.attacks, self.randomized, self.preprocessors)
        self.costly_counts = self.attack_probe.counts if self.attack_probe else {}

    def update(self, record: BatchRecord) -> None:
        probe = record.idx < PROBE
        if probe.any():
            self._probe(record, probe)
        if self.attack_probe is not None:
            self.attack_probe.update(record)
        kinds = {name: self.attacks[name].kind for name in record.attacks}
        white = [r.success for name, r in record.attacks.items() if kinds[name] == "whitebox"]
        black = [r.success for name, r in record.attacks.items() if kinds[name] == "blackbox"]
        correct = record.clean_pred == record.y
        self.counts["clean_correct"] += float(correct.sum())
        if white and black:
            missed = ~torch.stack(white).any(0)
            self.counts["blackbox_only"] += float((correct & missed & torch.stack(black).any(0)).sum())
        for result in record.attacks.values():
            if result.surrogate_success is not None:
                fooled = correct & result.surrogate_success
                self.counts["surrogate_fooled"] += float(fooled.sum())
                self.counts["not_transferred"] += float((fooled & ~result.success).sum())

    def _probe(self, record: BatchRecord, rows: torch.Tensor) -> None:
        """The model probes on the batch's rows among the split's first :data:`PROBE` samples."""
        x, y, logits, p = record.x[rows], record.y[rows], record.clean_logits[rows], self.probe
        self.num_classes = self.num_classes or logits.shape[1]
        scale = logits.abs().amax(1, keepdim=True).clamp_min(1)
        with torch.no_grad():
            again = self.model(record.x)[rows]
        change = ((again - logits).abs() / scale).max().item()
        p["max_logit_change"] = max(p["max_logit_change"], change)
        probability = bool((logits >= 0).all() and ((logits.sum(1) - 1).abs() <= SUM_TOLERANCE).all())
        p["probability_rows"] = min(p["probability_rows"], float(probability))
        xr = x.clone().requires_grad_(True)
        with torch.enable_grad(), straight_through(self.preprocessors), counting_autograd() as calls:
            out = self.model(xr)
            forward_calls = calls[0]
            loss = F.cross_entropy(out, y, reduction="sum")
            grad = (
                torch.autograd.grad(loss, xr, allow_unused=True, materialize_grads=True)[0]
                if loss.requires_grad
                else torch.zeros_like(x)
            ).flatten(1)
        p["autograd_calls"] = max(p["autograd_calls"], float(forward_calls))
        p["zero_grad"] += float((grad == 0).all(1).sum())
        p["nonfinite_grad"] += float((~grad.isfinite()).any(1).sum())
        p["grad_examples"] += float(len(x))
        if not self.randomized and change <= LOGIT_TOLERANCE:
            singles = (record.idx[rows] < SINGLES).nonzero().squeeze(1)
            noise = (2 * random_like(x, salted(record.seeds[rows], NOISE_SALT)) - 1) * NOISE
            with torch.no_grad():
                alone = [self.model(x[i : i + 1]) for i in singles.tolist()]
                noisy = self.model((x + noise).clamp(0, 1))
            if alone:
                moved = ((torch.cat(alone) - logits[singles]).abs() / scale[singles]).max().item()
                p["batch_change"] = max(p["batch_change"], moved)
            correct = logits.argmax(1) == y
            p["flips"] += float((correct & (noisy.argmax(1) != y)).sum())
            p["stable_examples"] += float(correct.sum())

    def load_journal_state(self, state, device) -> None:
        super().load_journal_state(state, device)
        if self.attack_probe is not None:
            self.attack_probe.counts = self.costly_counts

    def results(self) -> list[dict]:
        maxed = ("max_logit_change", "batch_change", "autograd_calls")
        p = {k: reduced_max(v, self.device) for k, v in self.probe.items() if k in maxed}
        p |= {k: summed(v, self.device) for k, v in self.probe.items() if k not in p and k != "probability_rows"}
        p["probability_rows"] = -reduced_max(-self.probe["probability_rows"], self.device)  # all processes
        counts = {k: summed(v, self.device) for k, v in self.counts.items()}
        return [
            self._randomised(p),
            self._probabilities(p),
            self._gradients(p),
            self._forward_optimisation(p),
            self._classes(),
            self._batch(p),
            self._stability(p),
            self._budget(),
            self._blackbox(counts),
            self._transfer(counts),
        ] + (self.attack_probe.results(self.device) if self.attack_probe is not None else [])

    def _randomised(self, p) -> dict:
        name, change = "randomised outputs", p["max_logit_change"]
        evidence = "max |logit change| between two forward passes of the same batch: " + _relative(change)
        if change <= LOGIT_TOLERANCE:
            if self.randomized:
                return entry(name, "warn", evidence + ", yet the model declares itself randomized")
            return entry(name, "pass", evidence)
        if not self.randomized:
            return entry(
                name,
                "fail",
                evidence + "; the model does not declare randomness, so it was attacked without EOT and scored on "
                "one draw",
                "declare randomized = True on the model (robustlab.models.base.DefendedModel) so that evaluation "
                "uses EOT and eval_draws, or remove the randomness (dropout left in train mode?)",
            )
        if self.draws <= 1:
            return entry(name, "warn", evidence + "; scored on one draw", "set eval_draws=10 or more")
        return entry(name, "pass", evidence + f"; declared, attacked with EOT and scored on {self.draws} draws")

    def _probabilities(self, p) -> dict:
        name = "probability outputs"
        if p["probability_rows"]:
            return entry(
                name,
                "fail",
                "every output row is non-negative and sums to 1: the model returns probabilities",
                "remove the softmax from the model's forward; attacks and metrics expect logits",
            )
        return entry(name, "pass", "outputs are not probability rows")

    def _gradients(self, p) -> dict:
        name, n = "zero or NaN input gradients", max(p["grad_examples"], 1)
        zero, bad = p["zero_grad"] / n, p["nonfinite_grad"] / n
        evidence = (
            f"{zero:.1%} of {int(n)} probed examples have an all-zero input gradient, {bad:.1%} a non-finite "
            "one" + (" (through BPDA over the declared preprocessors)" if self.preprocessors else "")
        )
        status = "fail" if zero + bad >= 0.1 else "warn" if zero + bad > 0 else "pass"
        fix = (
            "gradients are masked: declare non-differentiable preprocessing (DefendedModel.preprocessors) so "
            "that BPDA is used, remove detached or saturating layers, and confirm with black-box attacks "
            "(square_linf, spsa)"
        )
        return entry(name, status, evidence, fix if status != "pass" else "")

    def _forward_optimisation(self, p) -> dict:
        name, calls = "optimisation inside the forward", int(p["autograd_calls"])
        if calls:
            return entry(
                name,
                "fail",
                f"one forward pass called autograd {calls} time(s): the model optimises inside its forward",
                "attack the whole procedure adaptively (BPDA over the inner optimisation, EOT if it is random) and "
                "check the result with black-box attacks",
            )
        return entry(name, "pass", "the forward pass calls no autograd")

    def _classes(self) -> dict:
        name, n = "too few classes", int(reduced_max(self.num_classes or 0, self.device)) or None
        problems = []
        for label, attack in self.attacks.items():
            inner = innermost(attack)
            if getattr(inner, "loss", None) == "dlr" and n is not None and n < 3:
                problems.append(f"{label}: the DLR loss needs 3 or more classes, the model has {n}")
            targets = getattr(inner, "n_targets", None)
            if targets is not None and n is not None and targets > n - 1:
                problems.append(f"{label}: {targets} target classes asked, only {n - 1} exist (runs {n - 1})")
        if problems:
            return entry(name, "warn", "; ".join(problems), "lower n_targets, or use a CE-loss attack")
        return entry(name, "pass", f"{n} classes: enough for every attack's loss and targets")

    def _batch(self, p) -> dict:
        name = "batch dependence"
        if self.randomized or p["max_logit_change"] > LOGIT_TOLERANCE:
            return entry(name, "pass", "skipped: the outputs differ between passes of the same batch anyway")
        change = p["batch_change"]
        evidence = f"max |logit change| of {SINGLES} samples forwarded alone vs in their batch: " + _relative(change)
        if change > LOGIT_TOLERANCE:
            return entry(
                name,
                "fail",
                evidence,
                "put the model in eval mode (BatchNorm in train mode mixes the batch) or remove cross-example layers",
            )
        return entry(name, "pass", evidence)

    def _stability(self, p) -> dict:
        name = "unstable predictions"
        if self.randomized or p["max_logit_change"] > LOGIT_TOLERANCE:
            return entry(name, "pass", "skipped: a randomised model")
        n = max(p["stable_examples"], 1)
        share = p["flips"] / n
        evidence = f"{share:.1%} of {int(n)} clean-correct probed examples flip under uniform noise of 1/255"
        if share >= 0.01:
            return entry(
                name,
                "warn",
                evidence,
                "a tiny change already decides the prediction: check for noisy or quantised inputs and use EOT",
            )
        return entry(name, "pass", evidence)

    def _budget(self) -> dict:
        name, short = "step budget", []
        for label, attack in self.attacks.items():
            inner = innermost(attack)
            eps, step, steps = (getattr(inner, k, None) for k in ("eps", "step", "steps"))
            if all(isinstance(v, (int, float)) for v in (eps, step, steps)) and steps * step < eps * (1 - 1e-6):
                short.append(f"{label}: {steps} steps of {step:.4g} cover {steps * step:.4g} < eps {eps:.4g}")
        if short:
            return entry(name, "warn", "; ".join(short), "raise steps or step so that steps * step >= eps (2.5 eps)")
        return entry(name, "pass", "every iterative attack's steps * step reaches its eps")

    def _blackbox(self, counts) -> dict:
        name = "black-box beats white-box"
        kinds = {getattr(a, "kind", None) for a in self.attacks.values()}
        if not {"whitebox", "blackbox"} <= kinds:
            return entry(name, "pass", "skipped: needs both a white-box and a black-box attack")
        n, only = max(counts["clean_correct"], 1), counts["blackbox_only"]
        evidence = f"{int(only)} of {int(n)} clean-correct examples were broken by a black-box attack only"
        status = "fail" if only / n >= 0.05 else "warn" if only else "pass"
        fix = "the white-box attacks' gradients mislead (masking): use BPDA/EOT, more steps, or another loss"
        return entry(name, status, evidence, fix if status != "pass" else "")

    def _transfer(self, counts) -> dict:
        name, n, missed = "transfer failure", int(counts["surrogate_fooled"]), int(counts["not_transferred"])
        if not n:
            return entry(name, "pass", "skipped: no transfer attack fooled its surrogate on a clean-correct example")
        evidence = f"{missed} of {n} transfer examples that fooled the surrogate did not fool the evaluated model"
        fix = (
            "a transfer attack's robust accuracy is only an upper bound where its examples do not transfer: attack "
            "the model itself (white-box with BPDA/EOT, or square_linf), or take a surrogate closer to it"
        )
        return entry(name, "warn" if missed else "pass", evidence, fix if missed else "")

    def summary(self, results: list[dict]) -> str:
        counts = {s: sum(e["status"] == s for e in results) for s in ("pass", "warn", "fail")}
        flagged = [f"{e['status']}: {e['name']}" for e in results if e["status"] != "pass"]
        costly = [e["seconds"] for e in results if "seconds" in e]
        return (
            f"checks: {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail"
            + (" (" + "; ".join(flagged) + ")" if flagged else "")
            + (f"; the costly checks took {costly[0]:.1f} s" if costly else "")
        )
