"""Sweeps over the interpolation stage: the Optuna sweeper runs through train.py, the wandb sweep file composes."""

from __future__ import annotations

import subprocess
import sys

import yaml
from omegaconf import OmegaConf

from tests.conftest import ROOT, TINY_INTERPOLATION, TINY_RUN, compose_config


def test_optuna_sweep_over_guidance_and_learning_rate_runs_two_trials(tmp_path):
    tiny = [*TINY_RUN, *TINY_INTERPOLATION, "trainer.max_steps=1", "model.num_val_videos=0",
            f"paths.log_dir={tmp_path}"]
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "experiment=interpolation",
                           "hparams_search=interpolation_optuna", "hydra.sweeper.n_trials=2",
                           "hydra.sweeper.sampler.n_startup_trials=1", *tiny],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (results,) = tmp_path.glob("interpolation/optuna/*/optimization_results.yaml")
    best = OmegaConf.load(results)
    assert set(best.best_params) == {"model.guidance_scale", "model.optimizer.lr"}
    assert 0.0 <= best.best_params["model.guidance_scale"] <= 1.0 and best.best_value > 0  # val/psnr in dB
    trials = sorted(results.parent.glob("[01]/config_resolved.yaml"))
    assert len(trials) == 2
    lrs = {OmegaConf.load(t).model.optimizer.lr for t in trials}
    assert len(lrs) == 2 and all(2e-5 <= lr <= 5e-4 for lr in lrs)


def test_wandb_sweep_composes_with_train_py_for_its_extreme_values(tmp_path):
    sweep = yaml.safe_load((ROOT / "sweeps" / "interpolation.yaml").read_text())
    optuna = OmegaConf.load(ROOT / "conf" / "hparams_search" / "interpolation_optuna.yaml")
    assert sweep["program"] == "train.py" and (ROOT / sweep["program"]).is_file()
    assert sweep["metric"] == {"name": optuna.optimized_metric, "goal": optuna.hydra.sweeper.direction}
    assert set(sweep["parameters"]) == set(optuna.hydra.sweeper.params)
    fixed = [a for a in sweep["command"] if "=" in a and not a.startswith("${")]
    assert "${args_no_hyphens}" in sweep["command"]  # wandb passes key=value: Hydra's override syntax
    for bound in ("min", "max"):
        args = [f"{k}={v[bound]}" for k, v in sweep["parameters"].items()]
        cfg = compose_config([*fixed, *args], tmp_path)
        assert cfg.model.guidance_scale == sweep["parameters"]["model.guidance_scale"][bound]
        assert cfg.model.optimizer.lr == sweep["parameters"]["model.optimizer.lr"][bound]
        assert cfg.model._target_.endswith("InterpolationModule") and "WandbLogger" in cfg.logger.wandb._target_
