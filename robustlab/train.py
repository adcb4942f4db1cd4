"""The train task: fit a defense on a datamodule, save a self-describing checkpoint."""

import copy
import json
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, open_dict

import robustlab
from robustlab.checkpoint import META_KEY, read_checkpoint
from robustlab.errors import RobustlabError
from robustlab.evaluate import run_report
from robustlab.evaluation import AttackEvaluation, EvaluationLoop
from robustlab.models.sources import describe
from robustlab.tasks import (
    adapted,
    check_compatible,
    log_run_info,
    logged_run,
    make_attacks,
    make_trainer,
    plain,
    say,
    write_json,
)


def _choice(group: str) -> str | None:
    """The config-group option Hydra chose (e.g. the defense's config name), if known."""
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v.numel() == 1}


def _train_stages(cfg: DictConfig, defense: str) -> dict[str, Any]:
    """Train the prerequisite models a defense config lists under ``stages`` (DD's teacher, EAT's
    static models): ``stages.<field>`` is one run, or a list of runs, each ``{defense: node, model:
    node (optional), seed: int (optional)}``, trained with the rest of ``cfg`` (same data split) into
    ``<output_dir>/<field>[_<i>]``, unless ``defense.<field>`` already gives checkpoint path(s). The
    paths are filled into ``defense.<field>``. Each stage's checkpoint is on disk before the next
    stage starts, so a later failure does not lose it. Returns ``{field: path(s)}``."""
    stages = plain(cfg.defense.get("stages")) or {}
    with open_dict(cfg):
        cfg.defense.pop("stages", None)
    done = {}
    for field, spec in stages.items():
        finished = _finished_stage(cfg, field, spec)
        if cfg.defense.get(field) is None and finished is not None:
            with open_dict(cfg):
                cfg.defense[field] = finished
        if cfg.defense.get(field) is None:
            runs = spec if isinstance(spec, list) else [spec]
            names = [f"{field}_{i}" for i in range(len(runs))] if isinstance(spec, list) else [field]
            paths = []
            for run, name in zip(runs, names):
                sub = copy.deepcopy(cfg)
                with open_dict(sub):
                    sub.data = plain(cfg.data)  # the main run's split, whatever the stage's seed
                    sub.defense, sub.seed = run["defense"], run.get("seed", cfg.seed)
                    sub.model = run.get("model") or cfg.model
                    sub.paths.output_dir = str(Path(cfg.paths.output_dir) / name)
                    sub.test, sub.attack = False, None
                    sub.resume = bool(cfg.get("resume")) and (Path(sub.paths.output_dir) / LAST).is_file()
                path = train(sub, f"{defense}/{name}")["checkpoint"]
                if path is None:
                    raise RobustlabError(
                        f"stage {defense}/{name} saved no checkpoint",
                        "keep callbacks=default so that every stage writes checkpoints/last.ckpt",
                    )
                paths.append(path)
            with open_dict(cfg):
                cfg.defense[field] = paths if isinstance(spec, list) else paths[0]
        done[field] = plain(cfg.defense)[field]
    return done


LAST = Path("checkpoints") / "last.ckpt"


def _finished_stage(cfg: DictConfig, field: str, spec: Any) -> Any:
    """On ``resume``, the checkpoint(s) of a stage that finished before the interruption (its ``summary.json`` is
    written last), so that it is not trained again; None when it must (still) be trained."""
    if not cfg.get("resume"):
        return None
    names = [f"{field}_{i}" for i in range(len(spec))] if isinstance(spec, list) else [field]
    summaries = [Path(cfg.paths.output_dir) / name / "summary.json" for name in names]
    if not all(p.is_file() for p in summaries):
        return None
    paths = [json.loads(p.read_text())["checkpoint"] for p in summaries]
    return paths if isinstance(spec, list) else paths[0]


def _resume_from(cfg: DictConfig, defense: str) -> str | None:
    """The checkpoint ``resume=`` continues from (``true``: this run directory's ``checkpoints/last.ckpt``, if any
    epoch finished; ``PATH``: that file), checked to be a readable robustlab checkpoint of this run's model, data,
    defense and seed; None to start from the first epoch."""
    resume = cfg.get("resume")
    if not resume:
        return None
    path = Path(cfg.paths.output_dir) / LAST if resume is True else Path(str(resume))
    if resume is True and not path.is_file():
        return None
    meta = read_checkpoint(path)[META_KEY]
    mine = {"model": plain(cfg.model), "data": plain(cfg.data), "defense": defense, "seed": int(cfg.seed)}
    differs = [key for key, value in mine.items() if meta.get(key) != value]
    if differs:
        raise RobustlabError(
            f"resume: {path} was trained with another {' and '.join(differs)}",
            "resume with the command (model, data, defense, seed) that started the run, or train anew without resume=",
        )
    return str(path)


def train(cfg: DictConfig, name: str | None = None) -> dict[str, Any]:
    """Train ``cfg.defense`` on ``cfg.data`` with ``cfg.model``; return the checkpoint path and
    the logged metrics. Writes ``summary.json`` into ``cfg.paths.output_dir``. Prerequisite
    models (``defense.stages``) are trained first; after training the defense's ``after_fit(datamodule)``
    runs (e.g. RC's radius search) and, if it changed the model, the checkpoint is saved again."""
    defense = name or _choice("defense") or str(cfg.defense.get("_target_", "defense")).rsplit(".", 1)[-1]
    stages = _train_stages(cfg, defense)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model)
    check_compatible(net, datamodule)
    optimizer = instantiate(cfg.optimizer)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = instantiate(cfg.defense, net=net, optimizer=optimizer, scheduler=scheduler)
    resume = _resume_from(cfg, defense)
    module.robustlab_meta = {
        "version": robustlab.__version__,
        "model": plain(cfg.model),
        "data": plain(cfg.data),
        "defense": defense,
        "seed": int(cfg.seed),
        **({"stages": stages} if stages else {}),
    }
    attacks = make_attacks(cfg.get("attack"))
    loop = EvaluationLoop(
        attacks,
        {"attacks": AttackEvaluation()},
        stages=("validate", "test"),
        seed=cfg.seed,
        progress=False,
        draws=cfg.get("eval_draws", 1),
        precision=cfg.get("precision", "32-true"),
        compile=cfg.get("compile", False),
    )
    with logged_run(cfg) as loggers:
        trainer = make_trainer(cfg, loop, loggers)
        say(
            trainer,
            f"training {defense} on {datamodule.describe()} with {type(net).__name__}, "
            f"validation attacks: {', '.join(attacks) or 'none'}",
        )
        if resume:
            say(trainer, f"resuming from {resume}")
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        metrics = _scalars(trainer.callback_metrics)
        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        ckpt_path = (
            str(Path(checkpoint.last_model_path or checkpoint.best_model_path).resolve()) if checkpoint else None
        )
        if module.after_fit(datamodule) and ckpt_path:
            trainer.save_checkpoint(ckpt_path)
        report = None
        if cfg.get("test"):
            loop.attacks = adapted(attacks, module, cfg)
            trainer.test(module, datamodule=datamodule)
            metrics.update(_scalars(trainer.callback_metrics))
            source = describe("checkpoint", path=ckpt_path, target=cfg.model.get("_target_"))
            report, _ = run_report(cfg, loop, trainer, loggers, datamodule, source, defense, attacks, "train.py")
        summary = {
            "checkpoint": ckpt_path,
            "defense": defense,
            "stages": stages,
            "metrics": metrics,
            "test": loop.results.get("test"),
            "report": str((Path(cfg.paths.output_dir) / "report.json").resolve()) if report else None,
            "adaptive": {name: repr(a) for name, a in loop.attacks.items() if a is not attacks.get(name)},
        }
        if trainer.is_global_zero:
            log_run_info(loggers, {"checkpoint": ckpt_path})
            write_json(Path(cfg.paths.output_dir) / "summary.json", summary)
    say(trainer, f"checkpoint: {ckpt_path}")
    return summary
