"""Soak: a few hundred CPU training steps of the tiny shapes config with DataLoader workers; memory (RSS of the
trainer and its workers) does not grow and throughput does not fall. A control run with a deliberate leak shows
the probe would see one."""

from __future__ import annotations

import json
import mmap
import statistics
import time
from pathlib import Path

import lightning as L
import psutil
import torch

from fusionframes.training import train

# One intra-op thread (conftest): the soak measures drift, and a second OpenMP thread on a shared 2-core machine
# makes step times swing with other processes' load.
STEPS = 300
FAST = ["model.num_val_images=0", "trainer.val_check_interval=100000", "trainer.limit_val_batches=0",
        "trainer.log_every_n_steps=10", "data.datamodule.num_workers=2"]


class ResourceProbe(L.Callback):
    """Test instrument: after every training step, the wall time and the RSS (MiB) of this process plus its
    DataLoader workers, written to ``path`` as JSON when training ends. ``leak_mib`` > 0 keeps that many MiB
    alive per step (the control)."""

    def __init__(self, path: str, leak_mib: float = 0.0) -> None:
        self.path, self.leak_mib = Path(path), leak_mib
        self.process = psutil.Process()
        self.times: list[float] = []
        self.rss: list[float] = []
        self._kept: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.leak_mib:
            # Fresh pages (an anonymous mapping, written): freed heap memory of earlier tests in the same
            # process could otherwise serve a tensor without the RSS growing.
            size = int(self.leak_mib * 2**20)
            kept = mmap.mmap(-1, size)
            kept.write(b"\x01" * size)
            self._kept.append(kept)
        self.times.append(time.perf_counter())
        processes = [self.process, *self.process.children(recursive=True)]
        self.rss.append(sum(p.memory_info().rss for p in processes) / 2**20)

    def on_train_end(self, trainer, pl_module):
        self.path.write_text(json.dumps({"times": self.times, "rss": self.rss}))


def _soak(tiny_config, tmp_path: Path, steps: int, leak_mib: float = 0.0, run: str = "a") -> dict[str, list[float]]:
    probe = tmp_path / f"{run}-probe.json"
    train(tiny_config("shapes/t2i", *FAST, f"trainer.max_steps={steps}",
                      "+callbacks.probe._target_=tests.test_soak.ResourceProbe", f"+callbacks.probe.path={probe}",
                      f"+callbacks.probe.leak_mib={leak_mib}", run=run))
    return json.loads(probe.read_text())


def _windows(values: list[float], steps: int) -> tuple[list[float], list[float]]:
    """Values of steps [steps/6, steps/2) (after warm-up) and of the last third."""
    return values[steps // 6: steps // 2], values[2 * steps // 3:]


def test_soak_memory_flat_and_throughput_steady(tiny_config, tmp_path):
    record = _soak(tiny_config, tmp_path, STEPS)
    assert len(record["rss"]) == STEPS
    early_rss, late_rss = _windows(record["rss"], STEPS)
    step_seconds = [b - a for a, b in zip(record["times"], record["times"][1:])]
    early_time, late_time = _windows(step_seconds, STEPS - 1)
    growth = statistics.mean(late_rss) - statistics.mean(early_rss)
    # First quartiles of the step times: load from other processes only ever adds time, so the lower quartile
    # tracks the cost of a step itself.
    early_q1, late_q1 = (statistics.quantiles(t, n=4)[0] for t in (early_time, late_time))
    slowdown = late_q1 / early_q1
    print(f"soak: {STEPS} steps, RSS {statistics.mean(early_rss):.0f} -> {statistics.mean(late_rss):.0f} MiB "
          f"({growth:+.1f}), step time (first quartile) {1000 * early_q1:.0f} -> {1000 * late_q1:.0f} ms "
          f"(x{slowdown:.2f}), {STEPS / (record['times'][-1] - record['times'][0]):.1f} steps/s overall")
    assert growth < 16, f"RSS grew by {growth:.1f} MiB"
    assert slowdown < 1.5, f"steps got {slowdown:.2f}x slower"
    last = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == STEPS and last["callbacks"]["SkipNonFiniteSteps"]["skipped"] == 0


def test_probe_sees_a_leak_of_one_mib_per_step(tiny_config, tmp_path):
    """Control: the same measurement on a run that keeps 1 MiB per step reports the growth."""
    steps = 60
    early, late = _windows(_soak(tiny_config, tmp_path, steps, leak_mib=1.0)["rss"], steps)
    assert statistics.mean(late) - statistics.mean(early) > 16
