"""Exact resume: a run resumed from its step-k checkpoint matches the uninterrupted run at step 2k in losses,
weights, optimiser moments and LR schedule, for the shapes world and for webdataset shards, with workers,
across epoch boundaries."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from fusionframes.data.shapes import ShapesWorld
from fusionframes.data.webdataset import write_shards
from fusionframes.training import train

# No validation; a checkpoint every step; StepLR halves the learning rate every step.
FAST = ["model.num_val_images=0", "trainer.val_check_interval=100000", "trainer.limit_val_batches=0",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "+model.lr_scheduler._target_=torch.optim.lr_scheduler.StepLR", "+model.lr_scheduler._partial_=true",
        "+model.lr_scheduler.step_size=1", "+model.lr_scheduler.gamma=0.5"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    """8 shapes-world videos of 4 frames at 32x32 in 4 shards; a brace pattern over them."""
    world = ShapesWorld(resolution=32, num_frames=4, seed=5)
    samples = ((f"{i:04d}", world.render(world.scene(i), range(4)), world.scene(i).caption(),
                world.scene(i).to_dict()) for i in range(8))
    paths = write_shards(samples, str(tmp_path_factory.mktemp("shards") / "s-%03d.tar"), fps=24, max_per_shard=2)
    return paths[0].replace("000.tar", "{000..003}.tar")


def _losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=False)


def _assert_same_tensors(a: object, b: object, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# Overrides per case; k = 2. The shapes epoch has 3 batches, so 2k = 4 crosses its end; the finite
# webdataset epoch has 2 batches, so the checkpoint at k is taken at an epoch's very end.
CASES = {
    "shapes, 2 workers": ["data.datamodule.train.length=6", "data.datamodule.num_workers=2"],
    "webdataset, resampled stream, 2 workers": ["data=webdataset", "data.datamodule.num_workers=2",
                                                "data.datamodule.train.shuffle=3"],
    "webdataset, finite epochs, stop at an epoch's end": ["data=webdataset", "data.datamodule.num_workers=1",
                                                          "data.datamodule.train.resampled=false",
                                                          "data.datamodule.train.shuffle=3",
                                                          "data.datamodule.batch_size=4"],
}


@pytest.mark.parametrize("case", CASES)
def test_resume_at_k_matches_uninterrupted_run_at_2k(case, shards, tiny_config, tmp_path):
    k = 2
    overrides = [*FAST, *CASES[case], f"data.train_shards='{shards}'", f"data.val_shards='{shards}'"]
    if "data=webdataset" not in overrides:
        overrides = [o for o in overrides if "_shards=" not in o]
    train(tiny_config("shapes/t2i", *overrides, f"trainer.max_steps={2 * k}", run="straight"))
    checkpoint = tmp_path / "straight" / "checkpoints" / f"step_{k:07d}.ckpt"
    train(tiny_config("shapes/t2i", *overrides, f"trainer.max_steps={2 * k}", f"ckpt_path={checkpoint}",
                      run="resumed"))

    straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(k, 2 * k))
    assert {step: straight[step] for step in resumed} == resumed  # bit-identical losses
    a, b = (_state(tmp_path / run / "checkpoints" / "last.ckpt") for run in ("straight", "resumed"))
    assert a["global_step"] == b["global_step"] == 2 * k and a["epoch"] == b["epoch"]
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        _assert_same_tensors(a[key], b[key], key)
    assert b["lr_schedulers"][0]["_last_lr"] == [2.0e-4 * 0.5 ** (2 * k)]  # the schedule continued, not restarted
    assert a["loops"]["fit_loop"]["state_dict"] == b["loops"]["fit_loop"]["state_dict"]  # same data position
