"""Table 3 of the paper from decoder runs: one markdown row per run, the frozen image decoder first.

Reads each run's `csv/metrics.csv` (last validation values), `config_resolved.yaml` (variant, finetune) and the
parameter counts from the exported `export/decoder/config.json` (or, without an export, `checkpoints/last.ckpt`).
Pass multirun directories (their numbered job folders are the runs) or run directories.

    uv run python train.py -m experiment=decoder_conv3x3x3_attn trainer=gpu \\
        model/decoder=conv3x1x1,conv3x3x3,conv3x1x1_attn,conv3x3x3_attn,resblock_attn,conv2d_to_3d
    uv run python train.py -m experiment=decoder_conv3x3x3_attn trainer=gpu \\
        model/decoder=conv3x1x1,conv3x3x3 model.finetune=temporal
    uv run python benchmarks/decoder_table.py logs/video_decoder/multiruns/<A> logs/video_decoder/multiruns/<B> \\
        --out docs/decoder_table.md
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from omegaconf import OmegaConf

LABELS = {"conv3x1x1": "3x1x1 Conv", "conv3x3x3": "3x3x3 Conv", "conv3x1x1_attn": "3x1x1 Conv + Attn",
          "conv3x3x3_attn": "3x3x3 Conv + Attn", "resblock_attn": "ResNet Block + Attn", "conv2d_to_3d": "2D → 3D Conv"}
HEADER = ("| Decoder | Temporal layers | Finetune | PSNR ↑ | SSIM ↑ | MSE ↓ | LPIPS ↓ | Temporal err. ↓ | "
          "PSNR vs image dec. | New params | # Params | Run |\n|" + "---|" * 12)


def find_runs(directories: Iterable[Path]) -> list[Path]:
    """Run directories (holding ``csv/metrics.csv``) among ``directories`` and their job sub-folders."""
    runs = []
    for directory in directories:
        if (directory / "csv" / "metrics.csv").is_file():
            runs.append(directory)
        else:
            jobs = sorted((d for d in directory.iterdir() if (d / "csv" / "metrics.csv").is_file()),
                          key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
            if not jobs:
                raise FileNotFoundError(f"{directory} holds no run (no csv/metrics.csv in it or its sub-folders).")
            runs += jobs
    return runs


def last_metrics(path: Path) -> dict[str, float]:
    """The last logged value of every column of a Lightning ``metrics.csv``."""
    values: dict[str, float] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


def parameter_counts(run: Path) -> dict[str, int]:
    export = run / "export" / "decoder" / "config.json"
    if export.is_file():
        return json.loads(export.read_text())["parameter_counts"]
    checkpoint = run / "checkpoints" / "last.ckpt"
    if checkpoint.is_file():
        return torch.load(checkpoint, map_location="cpu", weights_only=False)["parameter_counts"]
    raise FileNotFoundError(f"{run} has neither export/decoder/config.json nor checkpoints/last.ckpt.")


def params(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def cells(metrics: dict[str, float], suffix: str = "") -> str:
    if f"val/psnr{suffix}" not in metrics:
        raise KeyError(f"no val/psnr{suffix} in metrics.csv: the run never validated.")
    lpips = metrics.get(f"val/lpips{suffix}")
    return (f"{metrics[f'val/psnr{suffix}']:.4f} | {metrics[f'val/ssim{suffix}']:.4f} | "
            f"{metrics[f'val/mse{suffix}']:.5f} | {'n/a' if lpips is None else f'{lpips:.4f}'} | "
            f"{metrics[f'val/temporal_error{suffix}']:.5f}")


def table(runs: list[Path]) -> str:
    rows = []
    for run in runs:
        config = OmegaConf.load(run / "config_resolved.yaml").model
        metrics = last_metrics(run / "csv" / "metrics.csv")
        counts = parameter_counts(run)
        if not rows:
            rows.append(f"| Image | - | - | {cells(metrics, '_image_decoder')} | - | 0 | "
                        f"{params(counts['image_decoder'])} | {run} |")
        gain = metrics["val/psnr"] - metrics["val/psnr_image_decoder"]
        rows.append(f"| Video | {LABELS[config.decoder.variant]} | {config.finetune.capitalize()} | {cells(metrics)} | "
                    f"{gain:+.4f} | {params(counts['new'])} | {params(counts['total'])} | {run} |")
    return "\n".join([HEADER, *rows]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directories", nargs="+", type=Path, help="multirun or run directories")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    text = table(find_runs(args.directories))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
