"""Compose a training run from a Hydra config: datamodule, LightningModule, callbacks, loggers, trainer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from fusionframes.utils.validation import check_run_config

log = logging.getLogger(__name__)


def _instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger group that has a ``_target_``."""
    if not cfg:
        return []
    return [instantiate(c, _convert_="all") for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured stage (resuming from ``cfg.ckpt_path`` if set); return the logged metrics."""
    check_run_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    log.info("Instantiating datamodule <%s>", cfg.data.datamodule._target_)
    datamodule: L.LightningDataModule = instantiate(cfg.data.datamodule, _convert_="all")
    log.info("Instantiating model <%s>", cfg.model._target_)
    model: L.LightningModule = instantiate(cfg.model, _convert_="all")
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    model.seed = cfg.get("seed") or 0

    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if cfg.get("train", True):
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        except SIGTERMException:  # PreemptionCheckpoint has saved and logged the checkpoint to resume from
            raise SystemExit(f"Training stopped by a signal after step {trainer.global_step}.") from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    log.info("Final metrics: %s", metrics)
    return metrics


def metric_for_sweep(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value of ``cfg.optimized_metric`` for Hydra sweepers, or None when none is configured."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; logged metrics are {sorted(metrics)}.")
    return metrics[name]
