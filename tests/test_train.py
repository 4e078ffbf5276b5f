"""`train.py` end to end on CPU: each base stage trains through Hydra, exports, resumes, and rejects bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
)

from fusionframes.models.latents import LatentCodec
from fusionframes.models.t2i import TextToImageModel
from fusionframes.training import train
from tests.conftest import ROOT, TINY_MODEL, TINY_RUN


def _losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def test_movq_stage_trains_and_exports_a_loadable_movq(tiny_config, tmp_path):
    cfg = tiny_config("shapes/movq")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    run = tmp_path / "a"
    assert (run / "config_resolved.yaml").exists() and (run / "checkpoints" / "last.ckpt").exists()
    assert list((run / "csv" / "media").glob("val_reconstructions_*.png"))
    codec = LatentCodec.from_pretrained(run / "export" / "movq")
    z = codec.encode(torch.zeros(1, 2, 3, 32, 32))
    assert z.shape == (1, 2, 4, 8, 8)
    assert codec.decode(z).shape == (1, 2, 3, 32, 32)


def test_t2i_stage_trains_on_the_shipped_movq_and_keeps_it_out_of_checkpoints(tiny_config, tmp_path):
    cfg = tiny_config("shapes/t2i")
    train(cfg)
    run = tmp_path / "a"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    assert not [k for k in ckpt["state_dict"] if k.startswith("codec.")], "frozen MoVQ copied into the checkpoint"
    assert ckpt["frozen_base"]["codec"]["path"].endswith("movq") and len(ckpt["frozen_base"]["codec"]["sha256"]) == 64
    assert ckpt["config"]["model"]["_target_"].endswith("TextToImageModule")
    assert list((run / "csv" / "media").glob("val_samples_*.png"))
    model = TextToImageModel.from_pretrained(run / "export" / "t2i")
    latents = model.generate(["a red circle moving left quickly on a black background"], latent_size=8,
                             num_inference_steps=2)
    assert latents.shape == (1, 4, 8, 8) and torch.isfinite(latents).all()


def test_resume_continues_step_count_and_losses_exactly(tiny_config, tmp_path):
    """Two steps, stop, resume to four == four steps straight (weights, optimiser, data position, noise)."""
    train(tiny_config("shapes/t2i", "trainer.max_steps=4", run="straight"))
    train(tiny_config("shapes/t2i", "trainer.max_steps=2", run="first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(tiny_config("shapes/t2i", "trainer.max_steps=4", f"ckpt_path={last}", run="resumed"))

    straight, first, resumed = (_losses(tmp_path / r) for r in ("straight", "first", "resumed"))
    assert sorted(resumed) == [2, 3]  # step counter continued from the checkpoint
    for step, loss in {**first, **resumed}.items():
        assert loss == pytest.approx(straight[step], rel=1e-5, abs=1e-7), step
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_unknown_group_option_is_a_clear_error(tiny_config):
    with pytest.raises((MissingConfigException, ConfigCompositionException), match="model/nope"):
        tiny_config("shapes/movq", "model=nope")


def test_negative_frames_is_a_clear_error(tiny_config):
    cfg = tiny_config("shapes/movq", "data/sampler=keyframes", "data.sampler.num_frames=-3")
    with pytest.raises((ValueError, InstantiationException), match="num_frames"):
        train(cfg)


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *args]


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(*args), cwd=cwd, capture_output=True, text=True, timeout=600)


def test_cli_multirun_and_bad_value_message(tmp_path):
    """`python train.py -m` runs each job; a bad value exits non-zero with its one-sentence message (that process
    runs beside the multirun's: each has one intra-op thread)."""
    tiny = [*TINY_RUN, *TINY_MODEL["shapes/movq"], "trainer.max_steps=1", f"paths.log_dir={tmp_path}"]
    with subprocess.Popen(_cli("experiment=shapes/movq", *tiny, "data.datamodule.batch_size=0"), cwd=tmp_path,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as bad:
        done = _run_cli("-m", "experiment=shapes/movq", *tiny, "seed=1,2", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        runs = sorted(tmp_path.glob("shapes_movq/multiruns/*/*/checkpoints/last.ckpt"))
        assert len(runs) == 2
        _, stderr = bad.communicate(timeout=600)
    assert bad.returncode != 0
    assert "data.datamodule.batch_size must be a positive integer, got 0." in stderr


def test_debug_fast_runs_one_batch_of_everything(tiny_config, tmp_path):
    metrics = train(tiny_config("shapes/movq", "debug=fast", "trainer.max_steps=50"))
    assert "train/loss" in metrics and "val/psnr" in metrics
    assert not (tmp_path / "a" / "csv").exists()  # loggers are off
    # Lightning still writes last.ckpt at train end under fast_dev_run; it must hold one step only.
    assert torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 1


def test_wandb_logger_works_offline_without_an_account(tiny_config, tmp_path, monkeypatch):
    import wandb

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = tiny_config("shapes/movq", "logger=wandb", "trainer.max_steps=1")
    assert cfg.logger.wandb.offline is True
    try:
        train(cfg)
    finally:
        wandb.finish()
    assert list((tmp_path / "a" / "wandb").glob("offline-run-*"))


def test_optuna_sweep_runs_two_trials(tmp_path):
    tiny = [*TINY_RUN, *TINY_MODEL["shapes/t2i"], "trainer.max_steps=1", "model.num_val_images=0",
            f"paths.log_dir={tmp_path}"]
    done = _run_cli("-m", "experiment=shapes/t2i", "hparams_search=shapes_t2i_optuna", "hydra.sweeper.n_trials=2",
                    "hydra.sweeper.sampler.n_startup_trials=1", *tiny, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    results = list(tmp_path.glob("shapes_t2i/multiruns/*/optimization_results.yaml"))
    assert len(results) == 1 and "best_value" in results[0].read_text()
    assert len(list(tmp_path.glob("shapes_t2i/multiruns/*/[01]/checkpoints/last.ckpt"))) == 2
