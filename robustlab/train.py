"""The train task: fit a defense on a datamodule, save a self-describing checkpoint."""
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

import robustlab
from robustlab.callbacks import AttackCallback
from robustlab.tasks import (check_compatible, finish, log_config, log_run_info, make_attacks, make_loggers, make_trainer, plain,
                             say, write_json)


def _choice(group: str) -> str | None:
    """The config-group option Hydra chose (e.g. the defense's config name), if known."""
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v.numel() == 1}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train ``cfg.defense`` on ``cfg.data`` with ``cfg.model``; return the checkpoint path and
    the logged metrics. Writes ``summary.json`` into ``cfg.paths.output_dir``."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model)
    check_compatible(net, datamodule)
    optimizer = instantiate(cfg.optimizer)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = instantiate(cfg.defense, net=net, optimizer=optimizer, scheduler=scheduler)
    defense = _choice("defense") or type(module).__name__
    module.robustlab_meta = {"version": robustlab.__version__, "model": plain(cfg.model), "data": plain(cfg.data),
                             "defense": defense, "seed": int(cfg.seed)}
    attack_callback = AttackCallback(make_attacks(cfg.get("attack")), seed=cfg.seed, progress=False)
    loggers = make_loggers(cfg.get("logger"))
    trainer = make_trainer(cfg, attack_callback, loggers)
    log_config(loggers, cfg)
    say(trainer, f"training {defense} on {datamodule.describe()} with {type(net).__name__}, "
                 f"validation attacks: {', '.join(attack_callback.attacks) or 'none'}")
    trainer.fit(module, datamodule=datamodule)
    metrics = _scalars(trainer.callback_metrics)
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    ckpt_path = str(Path(checkpoint.last_model_path or checkpoint.best_model_path).resolve()) if checkpoint else None
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule)
        metrics.update(_scalars(trainer.callback_metrics))
    summary = {"checkpoint": ckpt_path, "defense": defense, "metrics": metrics,
               "test": attack_callback.results.get("test")}
    if trainer.is_global_zero:
        log_run_info(loggers, {"checkpoint": ckpt_path})
        write_json(Path(cfg.paths.output_dir) / "summary.json", summary)
    finish(loggers)
    say(trainer, f"checkpoint: {ckpt_path}")
    return summary
