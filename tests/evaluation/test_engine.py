"""The evaluation engine: forward passes per batch under suite=full, a new evaluation added without touching
existing code, unique report sections, progress inside a batch, and logger shutdown after a crash."""

import hashlib
import io
import json
from collections import Counter

import pytest
import torch

from robustlab.attacks import PGD
from robustlab.attacks.adaptive import EOT
from robustlab.attacks.base import Attack
from robustlab.cli import robustlab_cause
from robustlab.evaluate import evaluate
from robustlab.evaluation import Evaluation, loop
from robustlab.evaluation.loop import example_seeds
from robustlab.progress import Progress, part, step
from tests.helpers import make_cfg
from tests.regression.cases import checkpoint


def _rows(x: torch.Tensor) -> list[str]:
    x = x.detach().float().contiguous().cpu()
    return [hashlib.sha1(r.numpy().tobytes()).hexdigest() for r in x]


class _PassCounter:
    """Counts, per image (row hash), the forward passes of the evaluated network, split into those inside an
    attack's ``run`` and those outside it, with or without gradients."""

    def __init__(self):
        self.passes = Counter()
        self.in_attack = 0

    def hook(self, module, args):
        kind = ("attack" if self.in_attack else "engine") + ("+grad" if torch.is_grad_enabled() else "")
        for h in _rows(args[0]):
            self.passes[kind, h] += 1

    def count(self, kind: str, images: torch.Tensor) -> Counter:
        return Counter(self.passes[kind, h] for h in _rows(images))


@pytest.fixture(scope="module")
def counted_full_suite(tmp_path_factory):
    """suite=full (with a baseline, every metric, save_adv) on the regression fixtures' PGD-AT model, one test
    batch of 40 images, with every forward pass of the evaluated and the baseline network counted."""
    import robustlab.checkpoint as ck
    import robustlab.evaluate as ev

    counter, baseline = _PassCounter(), _PassCounter()
    built = ck.build_model
    models = []

    def build(ckpt):
        model = built(ckpt)
        model.register_forward_pre_hook((counter if not models else baseline).hook)
        models.append(model)
        return model

    run = Attack.run

    def counted_run(self, *args, **kwargs):
        counter.in_attack += 1
        try:
            return run(self, *args, **kwargs)
        finally:
            counter.in_attack -= 1

    mp = pytest.MonkeyPatch()
    mp.setattr(ck, "build_model", build)
    mp.setattr(ev, "build_model", build)
    mp.setattr(Attack, "run", counted_run)
    out = tmp_path_factory.mktemp("counted")
    try:
        evaluate(
            make_cfg(
                "eval",
                out,
                [
                    f"ckpt={checkpoint('pgd_at')}",
                    "logger=none",
                    "progress=false",
                    "data.test_size=40",
                    "suite=full",
                    f"baseline={checkpoint('standard')}",
                    "save_adv=true",
                    "evaluations.checks=null",  # the checks' probes are extra passes by design (README, Checks)
                    "evaluations.curves=null",  # and so are the curves' reruns at other budgets
                ],
            )
        )
    finally:
        mp.undo()
    return counter, baseline, out


def test_each_image_set_goes_through_the_model_once(counted_full_suite):
    counter, baseline, out = counted_full_suite
    saved = {name: torch.load(out / "adv" / f"{name}.pt", weights_only=True) for name in ("fgsm", "pgd_linf")}
    x = saved["fgsm"]["x"]
    # One clean pass without gradients outside the attacks: the test step's own, hooked for every layer reader
    # (coverage, structure); corruption, defense utility, ENI and EBD reuse its logits.
    assert counter.count("engine", x) == Counter({1: 40})
    assert baseline.count("engine", x) == Counter({1: 40}), "the baseline's clean pass is shared"
    for name, rows in saved.items():
        moved = (rows["x_adv"] != rows["x"]).flatten(1).any(1)
        x_adv = rows["x_adv"][moved]
        assert len(x_adv) > 30
        # Outside the attack: nothing. Coverage and structure read the layer outputs of the passes whose logits
        # the attack returns (FGSM's scoring pass, PGD's last gradient step), and nothing re-runs the model to
        # learn the attack's logits or success.
        assert counter.count("engine", x_adv) == Counter({0: len(x_adv)}), name
        # Inside it: each returned image is evaluated at most once without gradients.
        assert max(counter.count("attack", x_adv)) <= 1, name


class MeanL2(Evaluation):
    """A toy evaluation written against the engine alone: the mean L2 norm of the successful perturbations
    of each attack."""

    def setup(self, context):
        self.sums = {name: torch.zeros(2, dtype=torch.float64) for name in context.attacks}

    def update(self, record):
        for name, result in record.attacks.items():
            ok = result.success & (record.clean_pred == record.y)
            norms = (result.x_adv - record.x)[ok].flatten(1).norm(dim=1)
            self.sums[name] += torch.tensor([norms.sum().item(), float(ok.sum())], dtype=torch.float64)

    def results(self):
        return {name: (s[0] / s[1]).item() for name, s in self.sums.items()}


def test_a_new_evaluation_needs_no_change_to_existing_code(tmp_path):
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path,
            [
                f"ckpt={checkpoint('standard')}",
                "logger=none",
                "progress=false",
                "data.test_size=30",
                "save_adv=true",
                "+evaluations.mean_l2._target_=tests.evaluation.test_engine.MeanL2",
            ],
        )
    )
    assert json.loads((tmp_path / "report.json").read_text())["mean_l2"] == report["mean_l2"]
    for name in ("fgsm", "pgd_linf"):
        saved = torch.load(tmp_path / "adv" / f"{name}.pt", weights_only=True)
        ok = saved["success"]
        expected = (saved["x_adv"] - saved["x"])[ok].flatten(1).norm(dim=1).double().mean().item()
        assert report["mean_l2"][name] == pytest.approx(expected, rel=1e-6)
    assert set(report["timings"]["evaluations"]) >= {"attacks", "mean_l2", "save_adv"}


@pytest.mark.parametrize("name", ["attacks", "clean", "worst_case", "seed", "timings"])
def test_a_report_section_claimed_twice_is_a_start_up_error(tmp_path, name):
    with pytest.raises(Exception) as info:
        evaluate(
            make_cfg(
                "eval",
                tmp_path,
                [
                    f"ckpt={checkpoint('standard')}",
                    "logger=none",
                    f"+evaluations.{name}._target_=tests.evaluation.test_engine.MeanL2",
                ],
            )
        )
    message = str(robustlab_cause(info.value))
    assert (
        f"report section {name!r}" in message and "fix: rename" in message and not (tmp_path / "report.json").exists()
    )


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_reports_inside_a_batch_with_the_time_left():
    stream = _Stream(tty=False)
    progress = Progress(2, ["attack pgd", "coverage"], stream=stream, every=0.0)
    with progress.running("attack pgd"):
        for t in range(4):
            step(t + 1, 4)
    with progress.running("coverage"):
        with part(0, 2):
            step(1, 2)
    assert progress.done() == pytest.approx(0.5)
    progress.next_batch()
    with progress.running("attack pgd"):
        with part(1, 2):
            step(1, 2)
        assert 0.5 < progress.done() < 1
    with progress.running("coverage"):
        pass
    progress.close()
    lines = stream.getvalue().splitlines()
    assert any(line.startswith("progress: ") and "batch 1/2 attack pgd" in line and "left" in line for line in lines)
    assert "attack pgd: 2 batch(es)" in stream.getvalue() and lines[-1].startswith("evaluated 2 batch(es) in ")
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue(), "no control characters in a log"
    live = _Stream(tty=True)
    bar = Progress(1, ["attack pgd"], stream=live)
    with bar.running("attack pgd"):
        step(1, 2)
    bar.close()
    assert "\r" in live.getvalue() and "evaluating" in live.getvalue()


def test_a_crashed_evaluation_finishes_its_logger(tmp_path, monkeypatch):
    import robustlab.tasks as tasks

    finished = []
    monkeypatch.setattr(tasks, "finish", lambda loggers, status="success": finished.append(status))

    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("lightning.Trainer.test", crash)
    with pytest.raises(RuntimeError, match="boom"):
        evaluate(make_cfg("eval", tmp_path, [f"ckpt={checkpoint('standard')}", "logger=csv"]))
    assert finished == ["failed"]


def test_example_seeds_keep_seed_zero_and_reach_torch_for_every_seed():
    """Seed 0 keeps the sample indices (so earlier reports stand); every other seed gives per-example seeds that
    differ in the low 32 bits, the only ones torch's CPU generator reads, and stay distinct within a run."""
    idx = torch.arange(1000)
    assert torch.equal(example_seeds(idx, 0), idx)
    for seed in (1, 2, 7, 123456789):
        seeds = example_seeds(idx, seed)
        assert seeds.min() >= 0 and seeds.max() < 2**32
        assert len(seeds.unique()) == len(idx)
        assert not (seeds == idx).any()
        g = torch.Generator()
        draws = [torch.rand(3, generator=g.manual_seed(int(s))) for s in (idx[5], seeds[5])]
        assert not torch.equal(*draws)


def test_a_costly_evaluation_says_so_after_its_first_batch_with_cheaper_flags(tmp_path, monkeypatch, capsys):
    progress = Progress(20, ["attack eot_pgd", "checks"], enabled=False)
    progress.spent.update({"attack eot_pgd": 57.0, "checks": 3.0})
    attacks = {"eot_pgd": EOT(PGD(steps=40), 20)}
    notice = loop.cost_notice(progress, attacks, 250, randomised=True)
    assert notice.startswith("expected cost: about 20m00s for 20 batch(es) of 250 (1m00s for the first, 95% of it ")
    for flag in ("data.test_size=750 (about 3 min)", "eot_samples=5 (now 20)", "attack.eot_pgd.steps=10 (now 40)"):
        assert flag in notice
    assert "eval_draws=3" in notice
    progress.spent.update({"attack eot_pgd": 5.0, "checks": 1.0})
    assert loop.cost_notice(progress, attacks, 250, randomised=False) is None, "20 x 6 s is under three minutes"

    monkeypatch.setattr(loop, "NOTICE_S", 0)
    args = [f"ckpt={checkpoint('standard')}", "logger=none", "data.test_size=20", "progress=false", "attack=[fgsm]"]
    evaluate(make_cfg("eval", tmp_path, args))
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("expected cost: ")]
    assert len(printed) == 1 and "data.test_size=" in printed[0]


def test_early_stop_is_on_unless_an_evaluation_reads_the_returned_images(tmp_path):
    """``early_stop: null`` (the PGD family's configs): on for robust accuracy alone, with the same report numbers
    as the full run; off when an attack-utility metric reads the returned images or the model is randomised;
    an explicit value is kept."""
    common = ["logger=none", "progress=false", "data.test_size=40", "attack=[fgsm,pgd_linf,mifgsm,transfer]"]
    common += ["attack.pgd_linf.eps=0.04", "attack.mifgsm.eps=0.04"]
    common.append(f"attack.transfer.surrogate={checkpoint('pgd_at')}")
    standard = [f"ckpt={checkpoint('standard')}", *common]

    def run(name, *overrides):
        return evaluate(make_cfg("eval", tmp_path / name, [*standard, *overrides]))

    early, full = run("early"), run("full", "attack.pgd_linf.early_stop=false", "attack.mifgsm.early_stop=false")
    assert early["early_stop"] == {"pgd_linf": True, "mifgsm": True}, "not FGSM (no steps) nor transfer (surrogate)"
    assert full["early_stop"] == {"pgd_linf": False, "mifgsm": False}
    for name in ("pgd_linf", "mifgsm"):
        a, b = early["attacks"][name], full["attacks"][name]
        assert 0 < a["robust_accuracy"] < early["clean"]["CA"]
        assert {k: v for k, v in a.items() if k not in ("seconds", "CC")} == {
            k: v for k, v in b.items() if k not in ("seconds", "CC")
        }
    assert early["worst_case"] == full["worst_case"]
    assert run("metric", "metric=[acac]")["early_stop"] == {"pgd_linf": False, "mifgsm": False}
    forced = run("forced", "metric=[acac]", "attack.pgd_linf.early_stop=true")
    assert forced["early_stop"] == {"pgd_linf": True, "mifgsm": False}
    randomised = evaluate(
        make_cfg(
            "eval",
            tmp_path / "rt",
            [f"ckpt={checkpoint('rt')}", *common[:3], "attack=[pgd_linf]", "attack.pgd_linf.steps=3", "eot_samples=2"],
        )
    )
    assert randomised["early_stop"] == {"pgd_linf": False}


def test_an_attack_hands_over_the_layer_outputs_of_the_images_it_returns(standard_model, mnist_test_batch):
    """Under a watch, PGD's result carries the requested layer outputs of its own passes (its last gradient step,
    its scoring of the rest), equal to those of a hooked pass of the returned images; the record runs one hooked
    pass for the rows an attack could not hand over; a watch gives nothing for logits that are not the latest
    pass's output or for a layer output changed in place."""
    from robustlab.evaluation.record import BatchRecord, LayerRequests
    from robustlab.metrics.coverage import select_layers

    model, (x, y) = standard_model, (mnist_test_batch[0][::4], mnist_test_batch[1][::4])
    requests = LayerRequests()
    layers = select_layers(loop.classifier(model))
    requests.add(layers, "raw")
    requests.add(layers, "neurons")
    names = list(layers)
    with requests.watching(model) as watch:
        result = PGD(eps=0.1, step=0.02, steps=5).run(model, x, y, seeds=torch.arange(len(x)), watch=watch)
        logits = model(x)
        assert watch.take(logits.clone()) is None and watch.take(logits[:3]) is None
        assert watch.take(logits)["raw"][names[0]].shape[0] == len(x)
    rows, store = result.outputs
    assert 0 < result.success.double().mean() < 1 and rows.double().mean() > 0.9
    with requests.hooked() as fresh, torch.no_grad():
        model(result.x_adv)
    for form in ("raw", "neurons"):
        for n in names:
            assert torch.equal(store[form][n][rows], fresh[form][n][rows]), (form, n)
    partial = rows.clone()
    partial[::3] = False
    for form in store:
        for n in names:
            store[form][n][~partial] = float("nan")
    record = BatchRecord("test", x, y, torch.arange(len(x)), torch.arange(len(x)), model(x), {"pgd": result}, model)
    record.requests = requests
    record.add_outputs("pgd", store, rows=partial)
    for form in ("raw", "neurons"):
        got = record.layer_outputs("pgd", names, form)
        assert all(torch.equal(got[n], fresh[form][n]) for n in names), form
    with requests.watching(model) as watch:
        handle = layers[names[0]].register_forward_hook(lambda module, args, output: output.relu_())
        try:
            assert watch.take(model(x)) is None
        finally:
            handle.remove()


def test_layer_outputs_are_the_models_own_tensors_unless_changed_in_place(standard_model, mnist_test_batch):
    """A hooked pass keeps references, not copies; a layer output changed in place after its hook (an in-place
    activation) empties that pass's store and makes every later pass copy, so the record still gives the layer's
    own output. An attack's handed-over outputs changed in place before the attack ends are dropped (its rows
    get the record's hooked pass), and those of a partly handed-over set are the same as a hooked pass's."""
    from robustlab.evaluation.record import BatchRecord, LayerRequests
    from robustlab.metrics.coverage import select_layers

    model, (x, y) = standard_model, (mnist_test_batch[0][:16], mnist_test_batch[1][:16])
    layers = select_layers(loop.classifier(model))
    names = list(layers)
    with torch.no_grad():
        logits = model(x)

    def record(requests: LayerRequests, results=None) -> BatchRecord:
        r = BatchRecord("test", x, y, torch.arange(len(x)), torch.arange(len(x)), logits, results or {}, model)
        r.requests = requests
        return r

    plain = LayerRequests()
    plain.add(layers, "raw")
    with plain.hooked() as store, torch.no_grad():
        out = model(x)
    assert store["raw"][names[-1]].data_ptr() == out.data_ptr() and not plain.copy
    expected = record(plain).layer_outputs("clean", names)

    inplace = LayerRequests()
    inplace.add(layers, "raw")
    inplace.add(layers, "neurons")
    after = loop.classifier(model).get_submodule("net.1")  # the module the first layer's output goes into
    handle = after.register_forward_pre_hook(lambda module, args: args[0].relu_())
    try:
        with inplace.hooked() as emptied, torch.no_grad():
            model(x)
        assert emptied == {"raw": {}, "neurons": {}} and inplace.copy
        got = record(inplace).layer_outputs("clean", names)
    finally:
        handle.remove()
    assert (got[names[0]] < 0).any(), "the first layer's own output, before the in-place ReLU"
    assert all(torch.equal(got[n], expected[n]) for n in names)

    class Scribbler(Attack):
        """Returns the clean images, hands over their pass, then changes that pass's logits in place."""

        name = "scribbler"

        def perturb(self, model, x, y, seeds, target=None):
            out = model(x)
            self.keep_logits(torch.arange(len(x)), out)
            out.mul_(1.0)
            return x.clone()

    watching = LayerRequests()
    watching.add(layers, "raw")
    with watching.watching(model) as watch:
        scribbled = Scribbler().run(model, x, y, seeds=torch.arange(len(x)), watch=watch)
        handed = PGD(eps=0.2, step=0.05, steps=5).run(model, x, y, seeds=torch.arange(len(x)), watch=watch)
    assert scribbled.outputs is None
    assert 0 < handed.success.double().mean() < 1 and handed.outputs[0].any(), "last step and scoring pass hand over"
    got = record(watching, {"pgd": handed}).layer_outputs("pgd", names)
    fresh = record(plain, {"pgd": handed}).layer_outputs("pgd", names)
    for n in names:
        assert torch.allclose(got[n], fresh[n], atol=1e-6), n
