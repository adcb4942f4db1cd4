"""The regression fixtures: one tiny checkpoint per defense, trained by ``train.py``, and the reports
``evaluate.py`` wrote for them (``reports/<case>.json``). ``python -m tests.regression.generate`` rebuilds
both; the reports committed here were written by the code before the evaluation engine was rebuilt."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES, REPORTS = HERE / "fixtures", HERE / "reports"

TRAIN = [
    "model._target_=tests.regression.tiny.TinyCNN",
    "data.train_size=3000",
    "data.val_size=150",
    "optimizer.lr=0.01",
    "data.test_size=60",
    "trainer.max_epochs=3",
    "logger=none",
    "attack=[]",
    "test=false",
    "seed=0",
]
#: Per defense, the training overrides that keep it to seconds.
DEFENSES = {
    "standard": [],
    "pgd_at": ["defense.attack.steps=3"],
    "fgsm_at": [],
    "trades": ["defense.attack.steps=3"],
    "mart": ["defense.attack.steps=3"],
    "igr": [],
    "nat": [],
    "eat": [],
    "distillation": [],
    "rt": [],
    "eit": ["defense.tv_steps=10"],
    "rc": ["defense.n_samples=20", "defense.grad_samples=4"],
    "te": ["defense.attack.steps=3"],
    "pd": ["defense.hidden=6", "defense.blocks=1"],
    "feature_squeezing": [],
    "lid": ["defense.n_reference=50"],
    "magnet": [],
}

EVAL = [
    "data.test_size=60",
    "logger=none",
    "progress=false",
    "attack=[fgsm,pgd_linf]",
    "attack.pgd_linf.steps=5",
    "eot_samples=4",
]
METRICS = "metric=[acac,actc,aldp,ass,psd,nte,rgb,ric]"
#: Every attack at a small budget, on the standard model.
ATTACKS = [
    "attack=[fgsm,rfgsm,bim,pgd_linf,pgd_l2,pgd_l1,mifgsm,tmifgsm,llc,rllc,illc,deepfool,cw2,ead,ead_l1,jsma,blb,"
    "optmargin,uap,spsa,nattack,boundary,transfer,eot_pgd,apgd_ce,apgd_dlr,apgdt,fabt,square_linf,square_l2,autoattack]",
    "attack.pgd_linf.steps=5",
    "attack.pgd_l2.steps=5",
    "attack.pgd_l1.steps=5",
    "attack.cw2.steps=50",
    "attack.cw2.binary_steps=3",
    "attack.ead.steps=50",
    "attack.ead.binary_steps=2",
    "attack.ead_l1.steps=50",
    "attack.ead_l1.binary_steps=2",
    "attack.blb.steps=20",
    "attack.blb.binary_steps=2",
    "attack.optmargin.steps=30",
    "attack.optmargin.binary_steps=2",
    "attack.uap.passes=2",
    "attack.uap.fit_size=50",
    "attack.spsa.steps=5",
    "attack.spsa.samples=16",
    "attack.nattack.steps=5",
    "attack.nattack.population=20",
    "attack.boundary.steps=100",
    "attack.boundary.init_draws=100",
    "attack.eot_pgd.n=3",
    "attack.eot_pgd.attack.steps=5",
    "attack.apgd_ce.steps=10",
    "attack.apgd_dlr.steps=10",
    "attack.apgdt.steps=5",
    "attack.apgdt.n_targets=3",
    "attack.fabt.steps=10",
    "attack.fabt.n_targets=3",
    "attack.square_linf.n_queries=100",
    "attack.square_l2.n_queries=100",
]


def checkpoint(defense: str, root: Path = FIXTURES) -> Path:
    return root / defense / "checkpoints" / "last.ckpt"


def cases(root: Path = FIXTURES) -> dict[str, list[str]]:
    """``{case: evaluate.py overrides}``: every defense under two attacks; the full suite on the PGD-AT model
    against the standard baseline; every attack and attack-utility metric on the standard model."""
    out = {defense: [f"ckpt={checkpoint(defense, root)}", *EVAL] for defense in DEFENSES}
    out["full"] = [
        f"ckpt={checkpoint('pgd_at', root)}",
        *EVAL,
        "suite=full",
        f"baseline={checkpoint('standard', root)}",
    ]
    out["attacks"] = [
        f"ckpt={checkpoint('standard', root)}",
        *EVAL,
        *ATTACKS,
        METRICS,
        f"attack.transfer.surrogate={checkpoint('pgd_at', root)}",
    ]
    return out
