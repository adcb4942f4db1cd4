"""The evaluate task: rebuild a model from its checkpoint alone and evaluate it on its test split."""

from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from robustlab.attacks.adaptive import EVAL_DRAWS
from robustlab.checkpoint import META_KEY, build_model, load_model, read_checkpoint
from robustlab.defenses.base import RobustClassifier
from robustlab.errors import RobustlabError
from robustlab.evaluation import AttackEvaluation, Detection, Evaluation, EvaluationLoop, SavedExamples
from robustlab.models.base import detector
from robustlab.tasks import (
    adapted,
    check_compatible,
    log_run_info,
    logged_run,
    make_attacks,
    make_metrics,
    make_trainer,
    plain,
    say,
    write_json,
)

#: The top-level report keys the task itself writes; evaluations own the others.
HEADER = ("checkpoint", "defense_name", "data", "model", "seed", "world_size", "attack_params", "adaptive", "timings")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt`` on its own test split under ``cfg.attack``, the attack-utility metrics
    ``cfg.metric`` and the suite's ``cfg.evaluations`` (each one's results go to ``report[<name>]``); write
    ``report.json`` into ``cfg.paths.output_dir`` and return the report."""
    if not cfg.get("ckpt"):
        raise RobustlabError("no checkpoint given", "run python evaluate.py ckpt=PATH with the path train.py printed")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt = read_checkpoint(cfg.ckpt)
    meta = ckpt[META_KEY]
    data_cfg = OmegaConf.merge(meta["data"], _given(plain(cfg.get("data") or {})))
    with open_dict(cfg):
        cfg.data = data_cfg
    datamodule = instantiate(data_cfg)
    net = build_model(ckpt)
    check_compatible(net, datamodule)
    module = RobustClassifier(net)
    configured = make_attacks(cfg.get("attack"))
    attacks = adapted(configured, net, cfg)
    evaluations = _evaluations(cfg, net)
    baseline = _baseline(cfg.baseline, datamodule) if cfg.get("baseline") else None
    loop = EvaluationLoop(
        attacks,
        evaluations,
        stages=("test",),
        seed=cfg.seed,
        progress=cfg.get("progress", True),
        baseline=baseline,
        draws=cfg.get("eval_draws", EVAL_DRAWS),
    )
    report_path = Path(cfg.paths.output_dir) / "report.json"
    with logged_run(cfg) as loggers:
        trainer = make_trainer(cfg, loop, loggers)
        say(
            trainer,
            f"evaluating {cfg.ckpt} ({meta.get('defense')}) on {datamodule.describe()} test split, "
            f"attacks: {', '.join(attacks) or 'none'}",
        )
        trainer.test(module, datamodule=datamodule, verbose=False)
        results = loop.results["test"]
        report = {
            "checkpoint": str(Path(cfg.ckpt).resolve()),
            "defense_name": meta.get("defense"),
            "data": datamodule.name,
            "model": meta["model"].get("_target_"),
            "seed": int(cfg.seed),
            "world_size": trainer.world_size,
            **{k: results[k] for k in AttackEvaluation.sections if k in results},
            "attack_params": {k: plain(v) for k, v in (cfg.get("attack") or {}).items()},
            "adaptive": {name: repr(attack) for name, attack in attacks.items() if attack is not configured[name]},
            **{k: v for k, v in results.items() if k not in AttackEvaluation.sections},
            "timings": loop.timings["test"],
        }
        if trainer.is_global_zero:
            write_json(report_path, report)
            log_run_info(loggers, {"checkpoint": report["checkpoint"], "report": str(report_path.resolve())})
    say(trainer, "\n".join([*loop.summary("test"), f"report: {report_path.resolve()}"]))
    return report


def _evaluations(cfg: DictConfig, net: nn.Module) -> dict[str, Evaluation]:
    """The attack evaluation, the suite's ``cfg.evaluations``, detection for a detector and the saved examples
    of ``save_adv``; a report section claimed twice is a start-up error."""
    evaluations: dict[str, Evaluation] = {"attacks": AttackEvaluation(make_metrics(cfg.get("metric")))}
    if cfg.get("save_adv"):
        evaluations["save_adv"] = SavedExamples(Path(cfg.paths.output_dir) / "adv")
    owners = {key: "the task" for key in HEADER} | {s: "the attack evaluation" for s in AttackEvaluation.sections}
    for name, node in (cfg.get("evaluations") or {}).items():
        if node is None:
            continue
        evaluation = instantiate(node)
        if not isinstance(evaluation, Evaluation):
            raise RobustlabError(
                f"evaluations.{name} is a {type(evaluation).__name__}, not an evaluation",
                f"give evaluations.{name}._target_ a robustlab.evaluation.Evaluation subclass",
            )
        evaluation.name = name
        for section in evaluation.report_sections():
            if section in owners or name in evaluations:
                raise RobustlabError(
                    f"evaluations.{name} writes report section {section!r}, which "
                    f"{owners.get(section, 'another evaluation')} writes too",
                    f"rename evaluations.{name} (report sections must be unique)",
                )
            owners[section] = f"evaluations.{name}"
        evaluations[name] = evaluation
    if detector(net) is not None and "detection" not in owners:
        evaluations["detection"] = Detection()
    return evaluations


def _given(node: Any) -> Any:
    """``node`` without its null entries (nested mappings included): the data keys given on the command line."""
    if not isinstance(node, dict):
        return node
    given = {k: _given(v) for k, v in node.items() if v is not None}
    return {k: v for k, v in given.items() if v != {}}


def _baseline(path: str, datamodule) -> nn.Module:
    """The baseline model of ``path``, read once for every evaluation that compares against it."""
    model = load_model(path)
    try:
        check_compatible(model, datamodule)
    except RobustlabError as error:
        raise RobustlabError(
            f"baseline={path}: {error.problem}", f"give baseline= a checkpoint trained on {datamodule.name}"
        ) from None
    return model
