"""Data-parallel scaling of a keyframe-stage training run: throughput, optimiser memory, loss and resume.

For each GPU count N in ``--devices`` this runs ``train.py`` (Lightning launches the N processes) with the
given experiment and overrides for ``--steps`` optimiser steps, with ``fusionframes.callbacks.step_stats``
recording every rank's batch times, losses, peak memory and optimiser-state bytes. Then, with ``--resume
A:B``, it resumes the N=A run's last checkpoint on B GPUs for ``--resume-steps`` more steps, and with
``--export N`` it converts the N-GPU run's checkpoint with ``python -m fusionframes.export``. Prints (and writes to
``--out``) a markdown table:

    N | ms/batch (mean over ranks, after --warmup batches) | samples/s per GPU | per-GPU efficiency vs the
    smallest N | optimiser state per GPU (GiB) and its ratio to the smallest N's | peak memory (GiB) |
    loss (mean of the first and last 5 batches)

At paper scale with random Kandinsky 3 weights (``scripts/make_random_kandinsky3.py``) and the shapes world
rendered at 256x256 (64x64 latents through the shapes MoVQ, the paper's 512x512 latent size):

    python scripts/make_random_kandinsky3.py /tmp/k3 --device cuda --dtype bf16
    python benchmarks/zero1_scaling.py --devices 1 2 4 --steps 20 --resume 4:2 --export 4 --workdir /tmp/zero1 \
        --out zero1.md -- experiment=paper/keyframes_blocks data=shapes data.resolution=256 \
        model.unet.path=/tmp/k3 model.movq_path=fusionframes/assets/shapes/movq
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30


def train(workdir: Path, devices: int, steps: int, overrides: list[str], ckpt_path: Path | None = None) -> list[dict]:
    """Run train.py on ``devices`` GPUs until global step ``steps``; every rank's StepStats record. A run
    whose records exist under ``workdir`` already is not repeated (a split measurement continues)."""
    run = workdir / f"n{devices}" if ckpt_path is None else workdir / f"resume_n{devices}"
    if len(list(run.glob("step_stats_rank*.json"))) == devices:
        return [json.loads(p.read_text()) for p in sorted(run.glob("step_stats_rank*.json"))]
    command = [
        sys.executable, str(ROOT / "train.py"), *overrides, f"trainer.devices={devices}",
        f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "trainer.limit_val_batches=0",
        f"callbacks.model_checkpoint.every_n_train_steps={steps}", "logger=csv",
        "+callbacks.step_stats._target_=fusionframes.callbacks.step_stats.StepStats",
        f"+callbacks.step_stats.dirpath={run}", f"hydra.run.dir={run}",
        *([f"ckpt_path={ckpt_path}"] if ckpt_path else []),
    ]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    return [json.loads(p.read_text()) for p in sorted(run.glob("step_stats_rank*.json"))]


def summarise(ranks: list[dict], warmup: int) -> dict[str, float]:
    """Mean batch time over ranks (after ``warmup`` batches), samples/s per GPU, memory, losses."""
    seconds = statistics.mean(statistics.mean(r["batch_seconds"][warmup:]) for r in ranks)
    losses = ranks[0]["losses"]
    return {
        "devices": ranks[0]["world_size"],
        "ms": 1e3 * seconds,
        "samples_per_s": ranks[0]["batch_size"] / seconds,
        "optimizer_gib": max(r["optimizer_state_bytes"] for r in ranks) / GIB,
        "peak_gib": max(r["peak_memory_bytes"] for r in ranks) / GIB,
        "loss_first": statistics.mean(losses[:5]),
        "loss_last": statistics.mean(losses[-5:]),
        "start_step": ranks[0]["start_step"],
        "end_step": ranks[0]["end_step"],
    }


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| GPUs | ms/batch | samples/s per GPU | per-GPU efficiency | optimiser state per GPU | peak memory "
             "| loss first 5 -> last 5 batches |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['devices']} | {r['ms']:.0f} | {r['samples_per_s']:.2f} | "
            f"{r['samples_per_s'] / base['samples_per_s']:.0%} | {r['optimizer_gib']:.2f} GiB "
            f"({r['optimizer_gib'] / base['optimizer_gib']:.2f}x) | {r['peak_gib']:.1f} GiB | "
            f"{r['loss_first']:.4f} -> {r['loss_last']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per run")
    parser.add_argument("--warmup", type=int, default=4, help="batches left out of the timing")
    parser.add_argument("--resume", default=None, help="A:B resumes the N=A run's checkpoint on B GPUs")
    parser.add_argument("--resume-steps", type=int, default=5)
    parser.add_argument("--export", type=int, default=None, help="export the checkpoint of the run on this many GPUs")
    parser.add_argument("--workdir", type=Path, default=ROOT / "logs" / "zero1_scaling")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="train.py overrides (after --)")
    args = parser.parse_args()

    def write(report: list[str]) -> None:  # after every run, so a run cut short keeps what was measured
        if args.out:
            args.out.write_text("\n".join(report) + "\n")

    rows = []
    for n in args.devices:
        rows.append(summarise(train(args.workdir, n, args.steps, args.overrides), args.warmup))
        write([table(rows)])
    report = [table(rows)]
    if args.resume:
        source, target = (int(n) for n in args.resume.split(":"))
        checkpoint = args.workdir / f"n{source}" / "checkpoints" / "last.ckpt"
        resumed = summarise(train(args.workdir, target, args.steps + args.resume_steps, args.overrides, checkpoint),
                            warmup=0)
        report.append(f"\nResumed the {source}-GPU checkpoint at step {args.steps} on {target} GPUs: training "
                      f"started at global step {resumed['start_step']} and ended at {resumed['end_step']}; loss of "
                      f"its first batches {resumed['loss_first']:.4f} (the {source}-GPU run's last: "
                      f"{rows[args.devices.index(source)]['loss_last']:.4f}).")
        write(report)
    if args.export:
        out = args.workdir / "export"
        checkpoint = args.workdir / f"n{args.export}" / "checkpoints" / "last.ckpt"
        subprocess.run([sys.executable, "-m", "fusionframes.export", str(checkpoint), str(out)], check=True, cwd=ROOT)
        files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        report.append(f"\nExported the {args.export}-GPU checkpoint ({checkpoint.name}) to {len(files)} files: "
                      f"{', '.join(files)}.")
    write(report)
    print("\n".join(report))


if __name__ == "__main__":
    main()
