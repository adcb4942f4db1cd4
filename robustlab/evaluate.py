"""The evaluate task: rebuild a model from its checkpoint alone and attack its test split."""
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from robustlab.attacks.adaptive import EOT_SAMPLES, adapt
from robustlab.callbacks import AttackCallback, DetectionCallback
from robustlab.checkpoint import META_KEY, build_model, load_model, read_checkpoint
from robustlab.defenses.base import RobustClassifier
from robustlab.errors import RobustlabError
from robustlab.tasks import check_compatible, finish, log_config, log_run_info, make_attacks, make_loggers, make_metrics, make_trainer, plain, say, write_json


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt`` on its own test split under ``cfg.attack`` and the suite's extra
    ``cfg.evaluations`` callbacks (each one's ``results`` go to ``report[<name>]``); write
    ``report.json`` into ``cfg.paths.output_dir`` and return the report."""
    if not cfg.get("ckpt"):
        raise RobustlabError("no checkpoint given", "run python evaluate.py ckpt=PATH with the path train.py printed")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt = read_checkpoint(cfg.ckpt)
    meta = ckpt[META_KEY]
    overrides = {k: v for k, v in plain(cfg.get("data") or {}).items() if v is not None}
    data_cfg = OmegaConf.merge(meta["data"], overrides)
    with open_dict(cfg):
        cfg.data = data_cfg
    datamodule = instantiate(data_cfg)
    net = build_model(ckpt)
    check_compatible(net, datamodule)
    module = RobustClassifier(net)
    configured = make_attacks(cfg.get("attack"))
    attacks = {name: adapt(attack, net, cfg.get("eot_samples", EOT_SAMPLES)) if cfg.get("adaptive", True) else attack
               for name, attack in configured.items()}
    attack_callback = AttackCallback(attacks, stages=("test",), seed=cfg.seed,
                                     progress=cfg.get("progress", True), metrics=make_metrics(cfg.get("metric")),
                                     save_adv=Path(cfg.paths.output_dir) / "adv" if cfg.get("save_adv") else None)
    baseline = {"baseline": _baseline(cfg.baseline, datamodule)} if cfg.get("baseline") else {}
    evaluations = {name: instantiate(node, **(baseline if "baseline" in node else {}))
                   for name, node in (cfg.get("evaluations") or {}).items() if node is not None}
    if hasattr(net, "detect"):
        evaluations.setdefault("detection", DetectionCallback())
    loggers = make_loggers(cfg.get("logger"))
    trainer = make_trainer(cfg, attack_callback, loggers, evaluations.values())
    log_config(loggers, cfg)
    say(trainer, f"evaluating {cfg.ckpt} ({meta.get('defense')}) on {datamodule.describe()} test split, "
                 f"attacks: {', '.join(attack_callback.attacks) or 'none'}")
    trainer.test(module, datamodule=datamodule, verbose=False)
    results = attack_callback.results["test"]
    report = {"checkpoint": str(Path(cfg.ckpt).resolve()), "defense_name": meta.get("defense"), "data": datamodule.name,
              "model": meta["model"].get("_target_"), "seed": int(cfg.seed), "world_size": trainer.world_size,
              **results, "attack_params": {k: plain(v) for k, v in (cfg.get("attack") or {}).items()},
              "adaptive": {name: repr(attack) for name, attack in attacks.items() if attack is not configured[name]},
              **{name: callback.results for name, callback in evaluations.items()}}
    report_path = Path(cfg.paths.output_dir) / "report.json"
    if trainer.is_global_zero:
        write_json(report_path, report)
        log_run_info(loggers, {"checkpoint": report["checkpoint"], "report": str(report_path.resolve())})
    finish(loggers)
    say(trainer, _summary(report, report_path))
    return report


def _baseline(path: str, datamodule) -> nn.Module:
    """The baseline model of ``path``, read once for every callback that compares against it."""
    model = load_model(path)
    try:
        check_compatible(model, datamodule)
    except RobustlabError as error:
        raise RobustlabError(f"baseline={path}: {error.problem}",
                             f"give baseline= a checkpoint trained on {datamodule.name}") from None
    return model


def _summary(report: dict, path: Path) -> str:
    lines = [f"clean CA {report['clean']['CA']:.4f} on {report['clean']['n_samples']} samples"]
    lines += [f"{name}: robust accuracy {r['robust_accuracy']:.4f}, MR {r['MR']:.4f}, {r['seconds']:.1f}s"
              for name, r in report["attacks"].items()]
    if "worst_case" in report:
        lines.append(f"worst case over attacks: robust accuracy {report['worst_case']['robust_accuracy']:.4f}")
    if "corruption" in report:
        c = report["corruption"]
        lines.append(f"corruption: mCE {c['mCE']:.4f}, RmCE {c['RmCE']:.4f}, mFR {c['mFR']}, clean error {c['clean_error']:.4f}")
    if "detection" in report:
        d = report["detection"]
        lines.append(f"detection: clean FPR {d['fpr']:.4f}" + "".join(
            f", {name} detected {r['detection_rate']:.4f} of {r['n']}" for name, r in d["attacks"].items()))
    return "\n".join([*lines, f"report: {path.resolve()}"])
