"""Multi-process training on CPU (DDP over gloo) and the sharded, resumable sample order."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fusionframes.callbacks.step_stats import StepStats, tensor_bytes
from fusionframes.data import datamodule
from fusionframes.data.datamodule import ResumableSampler
from tests.conftest import ROOT, TINY_MODEL, TINY_RUN


def _order(sampler: ResumableSampler, rank: int, world: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    monkeypatch.setattr(datamodule, "_rank_and_world", lambda: (rank, world))
    return list(sampler)


def test_ranks_split_the_epoch_and_resume_after_a_change_of_world_size(monkeypatch):
    full = list(ResumableSampler(20, shuffle=True, seed=3))
    shards = [_order(ResumableSampler(20, shuffle=True, seed=3), r, 4, monkeypatch) for r in range(4)]
    assert sorted(sum(shards, [])) == sorted(full) and all(len(s) == 5 for s in shards)
    # 8 samples consumed on 4 ranks; the 2-rank resume continues with exactly the other 12, in order.
    resumed = []
    for rank in range(2):
        sampler = ResumableSampler(20, shuffle=True, seed=3)
        sampler.start = 8
        resumed.append(_order(sampler, rank, 2, monkeypatch))
    assert sorted(sum(resumed, [])) == sorted(full[8:])


def test_ddp_on_two_cpu_processes_trains_saves_and_resumes(tmp_path):
    stats = [f"+callbacks.step_stats._target_={StepStats.__module__}.StepStats",
             f"+callbacks.step_stats.dirpath={tmp_path}"]
    args = [sys.executable, str(ROOT / "train.py"), "experiment=shapes/movq", *TINY_RUN, *TINY_MODEL["shapes/movq"],
            "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
            "+trainer.strategy.process_group_backend=gloo", f"paths.log_dir={tmp_path}"]
    first = subprocess.run([*args, *stats, f"hydra.run.dir={tmp_path / 'a'}"], capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["global_step"] == 2
    # StepStats on each rank: two timed batches, and the AdamW state it measured live is the state saved
    # (DDP: every rank holds all of it).
    saved_bytes = tensor_bytes(checkpoint["optimizer_states"][0]["state"], set())
    for rank in range(2):
        rank_stats = json.loads((tmp_path / f"step_stats_rank{rank}.json").read_text())
        assert rank_stats["world_size"] == 2 and rank_stats["start_step"] == 0 and rank_stats["end_step"] == 2
        assert len(rank_stats["batch_seconds"]) == len(rank_stats["losses"]) == 2
        assert rank_stats["optimizer_state_bytes"] == saved_bytes > 0
    second = subprocess.run([*args, *stats, "trainer.max_steps=4", f"ckpt_path={last}",
                             f"hydra.run.dir={tmp_path / 'b'}"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    assert json.loads((tmp_path / "step_stats_rank0.json").read_text())["start_step"] == 2
