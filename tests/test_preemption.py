"""Preemption and checkpoint integrity: SIGTERM / Ctrl+C save a checkpoint that resumes exactly; a kill or a
failure during a checkpoint write leaves the previous checkpoint loadable; a bad ckpt_path is a clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from fusionframes.training import train
from fusionframes.utils.checkpoint_io import AtomicCheckpointIO
from fusionframes.utils.validation import check_checkpoint
from tests.conftest import ROOT, TINY_MODEL, TINY_RUN

# One intra-op thread here (conftest) and in the train.py process: steady step times on a busy machine, and
# the same arithmetic on both sides of a resume.
FAST = ["model.num_val_images=0", "trainer.val_check_interval=100000", "trainer.limit_val_batches=0"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.parametrize(("signum", "workers"), [(signal.SIGTERM, 0), (signal.SIGINT, 1)], ids=["SIGTERM", "SIGINT"])
def test_signal_during_training_saves_a_checkpoint_that_resumes_exactly(signum, workers, tiny_config, tmp_path):
    """A real `train.py` process gets the signal (Ctrl+C reaches the whole process group, workers included)."""
    overrides = [*TINY_RUN, *TINY_MODEL["shapes/t2i"], *FAST]
    run = tmp_path / "preempted"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "experiment=shapes/t2i", *overrides, "trainer.max_steps=100000",
         "callbacks.model_checkpoint.every_n_train_steps=2", f"data.datamodule.num_workers={workers}",
         f"paths.log_dir={tmp_path}", f"hydra.run.dir={run}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    _wait_for(run / "checkpoints" / "step_0000002.ckpt", proc)
    os.killpg(proc.pid, signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Training stopped by a signal after step" in stderr, stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    stopped = torch.load(last, weights_only=False)["global_step"]
    assert f"after step {stopped}." in stderr and stopped >= 2
    assert f"resume with ckpt_path={last}" in (run / "shapes_t2i.log").read_text()

    # Resumed from the signal's checkpoint == uninterrupted, two steps further on.
    every_step = ["callbacks.model_checkpoint.every_n_train_steps=1", f"trainer.max_steps={stopped + 2}"]
    train(tiny_config("shapes/t2i", *FAST, *every_step, run="straight"))
    train(tiny_config("shapes/t2i", *FAST, *every_step, f"ckpt_path={last}", run="resumed"))
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=False) for r in ("straight", "resumed"))
    assert b["global_step"] == stopped + 2
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


WRITER = textwrap.dedent("""
    import sys, torch
    atomic, path = sys.argv[1] == "atomic", sys.argv[2]
    if atomic:
        from fusionframes.utils.checkpoint_io import AtomicCheckpointIO
        save = AtomicCheckpointIO().save_checkpoint
    else:
        save = torch.save
    weights = torch.zeros(128_000_000)  # 512 MB: long enough to catch a write in the middle, even when busy
    for version in range(1, 100_000):
        save({"version": version, "weights": weights.fill_(version)}, path)
        print(version, flush=True)
""")


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "in-place control"])
def test_kill_during_a_checkpoint_write(atomic, tmp_path):
    """SIGKILL while version 2 is half written: the atomic writer leaves version 1 intact; the same kill
    against a plain in-place torch.save (the control) leaves a file that does not load."""
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, "atomic" if atomic else "plain", str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "1"  # version 1 is complete
    full = path.stat().st_size
    partial = path.with_name("last.ckpt.tmp") if atomic else path
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size < full):  # version 2 is being written
        assert time.monotonic() < deadline and proc.poll() is None, "never caught a write in progress"
    proc.kill()
    proc.wait()
    assert partial.stat().st_size < full  # the kill did land in the middle of the write
    if atomic:
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["version"] == 1 and bool((checkpoint["weights"] == 1).all())
        AtomicCheckpointIO().save_checkpoint({"version": 3}, path)  # the stale .tmp does not get in the way
        assert torch.load(path)["version"] == 3 and not partial.exists()
    else:
        with pytest.raises((RuntimeError, EOFError)):  # truncated, or emptied by the open and not yet written
            torch.load(path, weights_only=True)


def test_failed_write_keeps_the_previous_last_ckpt_and_training_resumes(tiny_config, tmp_path, monkeypatch):
    """The 3rd checkpoint save of a run fails halfway (disk full): the run stops with that error, last.ckpt
    still holds step 2 and resumes."""
    real_save, saves = torch.save, []

    def failing_save(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 3:
            f.write(b"PK\x03\x04 partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    every_step = ["callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.model_checkpoint.save_top_k=0"]
    with pytest.raises(OSError, match="No space left"):
        train(tiny_config("shapes/t2i", *FAST, *every_step, "trainer.max_steps=4"))
    monkeypatch.setattr(torch, "save", real_save)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # no partial file left behind
    train(tiny_config("shapes/t2i", *FAST, *every_step, "trainer.max_steps=4", f"ckpt_path={last}", run="b"))
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"), (b"", "is not a readable checkpoint"), (b"garbage" * 100, "is not a readable checkpoint"),
])
def test_bad_ckpt_path_is_a_clear_error_before_anything_runs(content, message, tiny_config, tmp_path):
    path = tmp_path / "bad.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((FileNotFoundError, ValueError), match=f"ckpt_path={path} {message}"):
        train(tiny_config("shapes/t2i", f"ckpt_path={path}"))


def test_truncated_checkpoint_is_a_clear_error(tiny_config, tmp_path):
    train(tiny_config("shapes/t2i", *FAST, "trainer.max_steps=1"))
    data = (tmp_path / "a" / "checkpoints" / "last.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is not a readable checkpoint .* truncated"):
        train(tiny_config("shapes/t2i", f"ckpt_path={truncated}", run="b"))


def test_a_checkpoint_directory_must_be_a_complete_deepspeed_checkpoint(tmp_path):
    directory = tmp_path / "last.ckpt"
    directory.mkdir()
    with pytest.raises(ValueError, match=f"ckpt_path={directory} is a directory but not a complete DeepSpeed"):
        check_checkpoint("ckpt_path", directory)
    (directory / "latest").write_text("checkpoint")
    with pytest.raises(ValueError, match="not a complete DeepSpeed"):
        check_checkpoint("ckpt_path", directory)  # 'latest' names a tag that is missing
    (directory / "checkpoint").mkdir()
    check_checkpoint("ckpt_path", directory)
