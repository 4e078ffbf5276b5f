"""Lightning's DeepSpeed strategy, resuming ZeRO checkpoints on a different number of GPUs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import DeepSpeedStrategy

TAG = "checkpoint"  # the tag Lightning's DeepSpeedStrategy saves under
UNIVERSAL_TAG = "checkpoint_universal"


def saved_world_size(checkpoint: Path) -> int:
    """Data-parallel size a ZeRO checkpoint directory was saved with: its number of optimiser partitions."""
    return len(list((checkpoint / TAG).glob("*_optim_states.pt")))


def to_universal(checkpoint: Path) -> None:
    """Convert ``checkpoint/checkpoint`` into DeepSpeed's universal format beside it (``checkpoint_universal``
    and the ``latest_universal`` pointer) with DeepSpeed's own ``ds_to_universal``; Lightning's client state
    (trainer loops, callbacks) travels in the copied model-states file."""
    subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                    str(checkpoint / TAG), "--output_folder", str(checkpoint / UNIVERSAL_TAG),
                    "--inject_missing_state"], check=True)


class ResizableDeepSpeedStrategy(DeepSpeedStrategy):
    """``DeepSpeedStrategy`` whose ``ckpt_path`` may come from a run on another number of GPUs.

    DeepSpeed loads ZeRO-1/2 optimiser partitions only into the data-parallel size that saved them; other
    sizes need its universal checkpoint format. When the checkpoint's partition count differs from this
    run's world size, global rank 0 converts it once (into ``<ckpt>/checkpoint_universal``, the original is
    kept) and every rank loads the universal copy. Same world size: Lightning's loading, unchanged.
    """

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(checkpoint_path)
        saved = saved_world_size(path) if path.is_dir() else 0
        if saved and saved != self.world_size:
            if self.is_global_zero and not (path / "latest_universal").exists():
                to_universal(path)
            self.barrier("deepspeed_universal_checkpoint")
            self.deepspeed_engine._config.load_universal_checkpoint = True
        return super().load_checkpoint(checkpoint_path, weights_only)
