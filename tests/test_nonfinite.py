"""Non-finite loss or gradients: the step is skipped (weights and optimiser untouched), counted and logged;
repeated ones stop the run with a clear error and the last good state saved."""

from __future__ import annotations

import csv
import logging
import math

import lightning as L
import pytest
import torch

from fusionframes.callbacks.nonfinite import SkipNonFiniteSteps
from fusionframes.training import train

FAST = ["model.num_val_images=0", "trainer.val_check_interval=100000", "trainer.limit_val_batches=0",
        "callbacks.model_checkpoint.every_n_train_steps=1"]


class InjectFaults(L.Callback):
    """Fault injection for these tests: NaN images (so a NaN loss) at ``nan_loss_steps`` and from
    ``nan_loss_from`` on, an inf gradient (with a finite loss) at ``inf_grad_steps``."""

    def __init__(self, nan_loss_steps: list[int] = (), inf_grad_steps: list[int] = (),
                 nan_loss_from: int | None = None) -> None:
        self.nan_loss_steps, self.inf_grad_steps = set(nan_loss_steps), set(inf_grad_steps)
        self.nan_loss_from = nan_loss_from

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if step in self.nan_loss_steps or (self.nan_loss_from is not None and step >= self.nan_loss_from):
            batch["image"].fill_(math.nan)

    def on_after_backward(self, trainer, pl_module):
        if trainer.global_step in self.inf_grad_steps:
            next(p for p in pl_module.parameters() if p.grad is not None).grad.view(-1)[0] = math.inf


def _faults(**kwargs) -> list[str]:
    return ["+callbacks.faults._target_=tests.test_nonfinite.InjectFaults",
            *(f"+callbacks.faults.{key}={value}" for key, value in kwargs.items())]


def _checkpoint(run, step: int) -> dict:
    return torch.load(run / "checkpoints" / f"step_{step:07d}.ckpt", weights_only=False)


def _same(a: dict, b: dict) -> bool:
    """Same weights and same AdamW moments."""
    moments = [(s["exp_avg"], t["exp_avg"]) for s, t in zip(a["optimizer_states"][0]["state"].values(),
                                                                b["optimizer_states"][0]["state"].values())]
    return all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]) and all(
        torch.equal(x, y) for x, y in moments)


def test_nonfinite_loss_and_gradients_skip_the_step_and_are_counted(tiny_config, tmp_path, caplog):
    cfg = tiny_config("shapes/t2i", *FAST, "trainer.max_steps=6", *_faults(nan_loss_steps=[2], inf_grad_steps=[4]))
    with caplog.at_level(logging.WARNING, logger="fusionframes.callbacks.nonfinite"):
        train(cfg)
    run = tmp_path / "a"
    # Checkpoint step_k holds the state after k steps: steps 2 and 4 changed nothing, step 3 did.
    assert _same(_checkpoint(run, 2), _checkpoint(run, 3)) and _same(_checkpoint(run, 4), _checkpoint(run, 5))
    assert not _same(_checkpoint(run, 3), _checkpoint(run, 4))
    final = _checkpoint(run, 6)
    assert all(torch.isfinite(v).all() for v in final["state_dict"].values())
    assert final["callbacks"]["SkipNonFiniteSteps"] == {"skipped": 2, "consecutive": 0}
    assert "Step 2 skipped: non-finite loss" in caplog.text and "Step 4 skipped: non-finite gradients" in caplog.text
    with open(run / "csv" / "metrics.csv") as f:
        rows = {int(r["step"]): r for r in csv.DictReader(f) if r.get("train/loss")}
    assert math.isnan(float(rows[2]["train/loss"])) and float(rows[5]["train/nonfinite_steps"]) == 2


def test_repeated_nonfinite_steps_stop_the_run_with_the_last_good_state_saved(tiny_config, tmp_path):
    cfg = tiny_config("shapes/t2i", *FAST, "trainer.max_steps=20", "callbacks.nonfinite.max_consecutive=3",
                      *_faults(nan_loss_from=2))
    with pytest.raises(RuntimeError, match="Stopped after 3 consecutive steps with a non-finite loss or gradients "
                                           r"\(step 5\); the last good weights are saved in .*last.ckpt"):
        train(cfg)
    run = tmp_path / "a"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 5 and _same(last, _checkpoint(run, 2))  # the state after the last good step
    # Resuming (without the fault) trains on from it.
    train(tiny_config("shapes/t2i", *FAST, "trainer.max_steps=7", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                      run="b"))
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 7 and not _same(resumed, last)
    assert all(torch.isfinite(v).all() for v in resumed["state_dict"].values())


def test_max_consecutive_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_consecutive must be a positive integer, got 0"):
        SkipNonFiniteSteps(tmp_path, max_consecutive=0)
