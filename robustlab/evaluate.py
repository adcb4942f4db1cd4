"""The evaluate task: a model from a checkpoint or any other source (robustlab.models.sources), evaluated on the
test split of its own or any other data."""

import shlex
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from robustlab import __version__
from robustlab.attacks.adaptive import EVAL_DRAWS
from robustlab.attacks.base import innermost
from robustlab.checkpoint import META_KEY, build_model, load_model, read_checkpoint
from robustlab.cli import robustlab_cause
from robustlab.defenses.base import RobustClassifier
from robustlab.errors import ReportWarning, RobustlabError
from robustlab.evaluation import AttackEvaluation, Detection, Evaluation, EvaluationLoop, Gallery, SavedExamples
from robustlab.evaluation.attack_checks import norm_of
from robustlab.evaluation.journal import Journal
from robustlab.leaderboard import robustbench_entry
from robustlab.models.base import detector
from robustlab.models.sources import describe, load_weights, robustbench_preprocessing
from robustlab.report import log_report, write_pages
from robustlab.report.gallery import GALLERY_FILE
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
HEADER = (
    "run",
    "checkpoint",
    "defense_name",
    "data",
    "model",
    "model_source",
    "seed",
    "world_size",
    "threat",
    "attack_params",
    "early_stop",
    "precision",
    "compile",
    "adaptive",
    "timings",
    "robustbench",
)
NO_DATA = (
    "add data=<name>: cifar10, mnist5k, svhn, imagenet data.root=DIR, folder data.root=DIR or tensors data.path=F "
    "(a checkpoint brings its own)"
)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the model of ``cfg.ckpt`` (a ``train.py`` checkpoint) or of ``cfg.model`` (+ ``cfg.weights``) on the
    test split of ``cfg.data`` (by default the checkpoint's own) under ``cfg.attack``, the attack-utility metrics
    ``cfg.metric`` and the suite's ``cfg.evaluations`` (each one's results go to ``report[<name>]``); write
    ``report.json`` into ``cfg.paths.output_dir`` and return the report."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    resume = cfg.get("resume") or False
    if not isinstance(resume, bool):  # resume=DIR: continue the run in DIR
        if not Path(str(resume)).is_dir():
            raise RobustlabError(
                f"resume={resume} is not a run directory", "give resume= the run directory to continue"
            )
        with open_dict(cfg):
            cfg.paths.output_dir = str(resume)
    ckpt = read_checkpoint(cfg.ckpt) if cfg.get("ckpt") else None
    meta = ckpt[META_KEY] if ckpt else None
    given = _given(plain(cfg.get("data") or {}))
    if "_target_" in given:  # a data source replaces the checkpoint's data
        data_cfg = OmegaConf.create(given)
        model = plain(cfg.get("model")) or {}
        if given["_target_"] == "robustlab.data.ImageNet" and model.get("_target_") == ROBUSTBENCH:
            data_cfg.preprocessing = given.get("preprocessing") or robustbench_preprocessing(
                model["name"], model["threat_model"], model["dataset"]
            )
    elif meta is not None:
        data_cfg = OmegaConf.merge(meta["data"], given)
    else:
        raise RobustlabError("no data given for a model without a checkpoint", NO_DATA)
    with open_dict(cfg):
        cfg.data = data_cfg
    datamodule = unwrapped(instantiate, data_cfg)
    net, source = _model(cfg, ckpt, datamodule)
    return run(cfg, net, datamodule, source, defense=(meta or {}).get("defense"))


def run(cfg: DictConfig, net: nn.Module, datamodule, source: dict[str, Any], defense: str | None = None) -> dict:
    """The evaluation shared by :func:`evaluate` and :func:`robustlab.evaluate_model`: ``net`` on ``datamodule``'s
    test split under ``cfg``'s attacks, metrics and evaluations; ``source`` is the report's ``model_source``."""
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
        precision=cfg.get("precision", "32-true"),
        compile=cfg.get("compile", False),
        journal=_journal(cfg, source) if cfg.get("journal", True) and cfg.get("write_report", True) else None,
        resume=bool(cfg.get("resume")),
    )
    if loop.resume and loop.journal_options is not None:
        _check_journal(cfg, loop.journal_options)
    report_path = Path(cfg.paths.output_dir) / "report.json"
    with logged_run(cfg) as loggers:
        trainer = make_trainer(cfg, loop, loggers)
        say(
            trainer,
            f"evaluating {_origin(source)} ({defense or source['source']}) on {datamodule.describe()} test split, "
            f"attacks: {', '.join(attacks) or 'none'}",
        )
        trainer.test(module, datamodule=datamodule, verbose=False)
        if loop.skipped:
            say(trainer, f"resumed: {loop.skipped} finished batch(es) per process read from the journal")
        report, pages = run_report(cfg, loop, trainer, loggers, datamodule, source, defense, configured)
    say(trainer, "\n".join([*loop.summary("test"), f"report: {report_path.resolve()}{pages}"]))
    return report


def run_report(
    cfg: DictConfig,
    loop: EvaluationLoop,
    trainer: L.Trainer,
    loggers: list,
    datamodule,
    source: dict[str, Any],
    defense: str | None,
    configured: dict[str, Any],
    script: str = "evaluate.py",
) -> tuple[dict[str, Any], str]:
    """The report of the test stage ``loop`` ran (the attacks it ran, ``configured`` before adaptive wrapping), and
    on rank zero, unless ``write_report`` is false, ``report.json`` and (unless ``pages`` is false) report.html and
    report.md in ``cfg.paths.output_dir``, logged to ``loggers``. Returns the report and a note on the pages for the
    summary line. ``train.py`` writes one for its test stage too, so a training sweep's directory is comparable."""
    attacks = loop.attacks
    report_path = Path(cfg.paths.output_dir) / "report.json"
    results = loop.results["test"]
    attack_params = {k: plain(v) for k, v in (cfg.get("attack") or {}).items()}
    report = {
        "run": _run_info(script),
        "checkpoint": source["path"] if source["source"] == "checkpoint" else None,
        "defense_name": defense,
        "data": datamodule.name,
        "model": source.get("target"),
        "model_source": source,
        "seed": int(cfg.seed),
        "world_size": trainer.world_size,
        **{k: results[k] for k in AttackEvaluation.sections if k in results},
        "threat": _threat(attacks),
        "attack_params": attack_params,
        "early_stop": loop.early_stop,
        "precision": loop.precision,
        "compile": loop.compile,
        "adaptive": {name: repr(attack) for name, attack in attacks.items() if attack is not configured[name]},
        **{k: v for k, v in results.items() if k not in AttackEvaluation.sections},
        "timings": loop.timings["test"],
    }
    report["robustbench"] = robustbench_entry(report, datamodule, source)
    pages = ""
    if trainer.is_global_zero and cfg.get("write_report", True):
        write_json(report_path, report)
        info = {"checkpoint": report["checkpoint"], "model": _origin(source), "report": str(report_path.resolve())}
        log_run_info(loggers, info)
        if cfg.get("pages", True):
            start = time.perf_counter()
            try:
                log_report(loggers, write_pages(report, report_path.parent), report_path.parent)
                pages = f" (report.html, report.md: {time.perf_counter() - start:.1f} s)"
            except Exception as err:  # the numbers are written; a page that cannot be drawn must not lose the run
                warnings.warn(
                    f"report.html / report.md not written ({type(err).__name__}: {err}); rebuild them with "
                    f"python -m robustlab.report {report_path.parent}",
                    ReportWarning,
                    stacklevel=1,
                )
    return report, pages
    say(trainer, "\n".join([*loop.summary("test"), f"report: {report_path.resolve()}{pages}"]))
    return report


def _run_info(script: str = "evaluate.py") -> dict[str, Any]:
    """The report's ``run`` header: robustlab's version, the time (UTC) and the command line's overrides."""
    command = None
    if HydraConfig.initialized():
        command = shlex.join(["python", script, *HydraConfig.get().overrides.task])
    return {
        "robustlab": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }


def _threat(attacks: dict) -> dict[str, dict[str, Any]]:
    """``{attack: {"norm", "eps"}}`` for the eps-bounded attacks (the report's ``threat`` header)."""
    inner = {name: innermost(attack) for name, attack in attacks.items()}
    return {name: {"norm": norm_of(a), "eps": float(a.eps)} for name, a in inner.items() if norm_of(a) is not None}


#: Settings that do not change a report's numbers, left out of the journal's key.
VOLATILE = (
    "resume",
    "progress",
    "keep_freed_memory",
    "paths",
    "logger",
    "ckpt",
    "weights",
    "write_report",
    "pages",
    "journal",
    "trainer",
    "hydra",
)


def _journal(cfg: DictConfig, source: dict[str, Any]) -> dict[str, Any]:
    """Where the evaluation journal goes and what identifies the run: the model's file hashes and the resolved
    config without :data:`VOLATILE` settings and file locations."""
    config = {k: v for k, v in plain(cfg).items() if k not in VOLATILE}
    if isinstance(config.get("model"), dict):
        config["model"] = {k: v for k, v in config["model"].items() if k not in ("path", "model_dir")}
    model = {k: v for k, v in source.items() if k == "source" or k.endswith("sha256") or k in ("name", "target")}
    return {"directory": str(Path(cfg.paths.output_dir) / "journal"), "identity": {"model": model, "config": config}}


def _check_journal(cfg: DictConfig, options: dict[str, Any]) -> None:
    """Before the trainer starts (so the error is the only line): rank 0's journal must be of this run. Each
    process checks its own again when the evaluation starts."""
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1) or 1
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if isinstance(devices, int | list) and not isinstance(devices, bool):
        Journal.of(options, (devices if isinstance(devices, int) else len(devices)) * nodes, 0).read()


def _origin(source: dict[str, Any]) -> str:
    return str(source.get("path") or source.get("name") or source["source"])


def unwrapped(factory, *args, **kwargs):
    """``factory(*args, **kwargs)``, with a :class:`RobustlabError` that Hydra's ``instantiate`` wrapped raised bare."""
    try:
        return factory(*args, **kwargs)
    except Exception as err:
        cause = robustlab_cause(err)
        if cause is None or cause is err:
            raise
        raise cause from None


def _model(cfg: DictConfig, ckpt: dict | None, datamodule) -> tuple[nn.Module, dict[str, Any]]:
    """The model to evaluate (``ckpt``'s, or ``cfg.model``'s with ``cfg.weights``) and the report's record of it;
    a model config's null ``num_classes`` / ``in_chans`` take the data's."""
    if ckpt is not None:
        if cfg.get("model") or cfg.get("weights"):
            raise RobustlabError(
                "both ckpt= and model=/weights= given", "give ckpt=PATH alone, or model=<source> (with weights=W.pt)"
            )
        target = ckpt[META_KEY]["model"].get("_target_")
        return build_model(ckpt), describe("checkpoint", path=cfg.ckpt, target=target)
    if not cfg.get("model"):
        raise RobustlabError(
            "no model given",
            "run python evaluate.py ckpt=PATH with the path train.py printed, or model=<source> (README, "
            "Evaluating any model)",
        )
    node = plain(cfg.model)
    for key, value in (("num_classes", datamodule.num_classes), ("in_chans", datamodule.in_channels)):
        if key in node and node[key] is None:
            node[key] = value
    target = node["_target_"]
    kind = SOURCES.get(target, "architecture")
    weights = cfg.get("weights")
    if weights and kind in ("torchscript", "onnx", "robustbench"):
        raise RobustlabError(f"weights= given for model={kind}, which carries its own", "drop weights=")
    if not weights and (kind == "architecture" or (kind in ("timm", "torchvision") and not node.get("pretrained"))):
        raise RobustlabError(
            f"model {target} has no weights given (its parameters would be random)",
            "add weights=W.pt (a state dict or .safetensors)"
            + (" or model.pretrained=true" if kind in ("timm", "torchvision") else ""),
        )
    net = unwrapped(instantiate, node)
    if weights:
        load_weights(net, weights)
    fields = {k: node.get(k) for k in ("name", "threat_model", "dataset", "path")}
    if kind == "robustbench":
        fields["path"] = str(Path(node["model_dir"]) / node["dataset"] / node["threat_model"] / f"{node['name']}.pt")
    return net.eval(), describe(kind, weights=weights, target=node.get("target") or target, **fields)


ROBUSTBENCH = "robustlab.models.sources.robustbench_model"
#: The model configs' factories and the source name the report gives them.
SOURCES = {
    f"robustlab.models.sources.{fn}": name
    for fn, name in (
        ("custom", "custom"),
        ("torchscript", "torchscript"),
        ("onnx", "onnx"),
        ("timm_model", "timm"),
        ("torchvision_model", "torchvision"),
        ("robustbench_model", "robustbench"),
    )
}


def _evaluations(cfg: DictConfig, net: nn.Module) -> dict[str, Evaluation]:
    """The attack evaluation, the suite's ``cfg.evaluations``, detection for a detector and the saved examples
    of ``save_adv``; a report section claimed twice is a start-up error."""
    evaluations: dict[str, Evaluation] = {"attacks": AttackEvaluation(make_metrics(cfg.get("metric")))}
    if cfg.get("save_adv"):
        evaluations["save_adv"] = SavedExamples(Path(cfg.paths.output_dir) / "adv")
    elif cfg.get("gallery", 0) and cfg.get("write_report", True):
        evaluations["gallery"] = Gallery(Path(cfg.paths.output_dir) / GALLERY_FILE, cfg.gallery)
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
