"""Save a resumable checkpoint when a run is stopped by SIGTERM (preemption) or SIGINT (Ctrl+C)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class PreemptionCheckpoint(L.Callback):
    """On SIGTERM or SIGINT, finish the current step, save ``dirpath/filename.ckpt`` and stop.

    Lightning's signal connector already turns SIGTERM into a stop at the next step boundary, on every
    rank, by raising ``SIGTERMException`` there; this callback routes the first SIGINT to the same
    handler and saves the checkpoint when that stop happens, so its state is that of a finished step and
    ``ckpt_path=<it>`` resumes exactly. A second SIGINT interrupts at once, without a checkpoint.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last") -> None:
        if not filename:
            raise ValueError("callbacks.preemption.filename must be a non-empty file name without extension.")
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self._previous_sigint: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self._restore_sigint()
        stop_after_step = signal.getsignal(signal.SIGTERM)  # Lightning's, registered once the loop starts
        if not callable(stop_after_step):
            raise KeyboardInterrupt
        log.warning("Received SIGINT: stopping after this step (press Ctrl+C again to stop at once).")
        stop_after_step(signum, frame)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)
            log.warning("Stopped by a signal after step %d; resume with ckpt_path=%s", trainer.global_step, self.path)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_sigint()
