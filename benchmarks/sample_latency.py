"""Per-stage latency of text -> video sampling with the shipped pipeline (what `sample.py` runs).

    uv run python benchmarks/sample_latency.py --device cuda --fps high
"""

from __future__ import annotations

import argparse

import torch

from fusionframes.pipeline import FusionFramesPipeline
from fusionframes.utils.resolvers import ASSETS_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline-dir", default=str(ASSETS_DIR / "shapes"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fps", default="high", choices=["keyframes", "medium", "high"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pipeline = FusionFramesPipeline.from_pretrained(args.pipeline_dir).to(args.device)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else None
    runs = [pipeline("a red circle moving right quickly on a black background", fps=args.fps, seed=i,
                     progress=False, dtype=dtype)["seconds"] for i in range(args.repeats + 1)][1:]  # first: warm-up
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"fps={args.fps}, defaults of sample.py (50 keyframe steps, 10 interpolation steps), {device}, "
          f"mean of {args.repeats} runs after a warm-up\n\n| stage | seconds |\n|---|---|")
    for stage in runs[0]:
        print(f"| {stage} | {sum(r[stage] for r in runs) / len(runs):.3f} |")
    print(f"| total | {sum(sum(r.values()) for r in runs) / len(runs):.3f} |")


if __name__ == "__main__":
    main()
