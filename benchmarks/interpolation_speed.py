"""Interpolation speed: FusionFrames interpolator vs Masked Frame Interpolation (paper §6.3, Figure 7).

Times ``InterpolationUNet.interpolate`` on 16 keyframe latents for one pass (s=3, 16 -> 61 frames) and for
both passes (s=3 then s=1, 16 -> 61 -> 241 frames), each mode at the same DDIM steps and context guidance
(one UNet call per step over all groups/frames and both branches), random weights. FusionFrames runs the
UNet on T-1 groups per video, MFI on all 4T-3 frames (about 4x as many), MFI on 5-frame windows (the paper's
appendix 10) on 5(T-1) frames (5x); the ratios to FusionFrames are measured in the same run.

Sizes: ``shapes``: the shipped shapes-world UNet2DConditionModel config, 16x16 latents (64x64 frames);
``paper``: Kandinsky3UNet at its real default size (~3B parameters), 32x32 latents (256x256 frames) and
64x64 latents (512x512 frames). On CUDA the models run in bf16 (fp32 elsewhere), with a warm-up pass,
``torch.cuda.synchronize`` around each timed pass and peak memory per mode. Prints a markdown table.

    uv run python benchmarks/interpolation_speed.py --size shapes --device cpu --steps 2 --repeats 3
    uv run python benchmarks/interpolation_speed.py --size paper --device cuda --steps 10 --out docs/interp_speed.md
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.unets.unet_kandinsky3 import Kandinsky3UNet
from torch import nn

from fusionframes.diffusion import NoiseSchedule
from fusionframes.models.interpolation_unet import MODES, WINDOW, InterpolationUNet, num_frames
from fusionframes.utils.memory_format import channels_last

ASSETS = Path(__file__).resolve().parent.parent / "fusionframes" / "assets" / "shapes"
NUM_KEYFRAMES = 16

#: size -> (UNet factory, null-context width, latent sizes).
SIZES: dict[str, tuple[Callable[[], nn.Module], int, tuple[int, ...]]] = {
    "shapes": (lambda: UNet2DConditionModel.from_config(json.loads((ASSETS / "t2i" / "unet" / "config.json")
                                                                   .read_text())), 128, (16,)),
    "paper": (Kandinsky3UNet, 4096, (32, 64)),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(size: str, mode: str, device: torch.device, dtype: torch.dtype) -> InterpolationUNet:
    """A fresh interpolator in ``mode`` around a randomly initialised backbone (built on ``device``)."""
    make_unet, text_dim, _ = SIZES[size]
    torch.manual_seed(0)
    with torch.device(device):
        model = InterpolationUNet(make_unet(), torch.randn(1, text_dim), mode=mode)
    return model.to(dtype).eval()


def timed(run: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> tuple[float, torch.Tensor]:
    """(fastest of ``repeats`` runs in seconds, the last output)."""
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        out = run()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def measure(model: InterpolationUNet, latent: int, steps: int, repeats: int, device: torch.device,
            dtype: torch.dtype, schedule: NoiseSchedule, cuda_graph: bool = False) -> dict[str, float]:
    """Seconds for pass 1 and for both passes (fastest of ``repeats``, after an untimed 1-step warm-up of
    each), peak GiB on CUDA; with ``cuda_graph`` on CUDA also the largest difference of a graphed pass 1 from an
    eager one with the same noise."""
    generator = torch.Generator(device).manual_seed(0)
    keyframes = torch.randn(1, NUM_KEYFRAMES, 4, latent, latent, device=device, dtype=dtype, generator=generator)

    def passes(num_steps: int, both: bool, graph: bool = cuda_graph) -> torch.Tensor:
        video = model.interpolate(keyframes, 3, schedule, num_steps, generator=generator, cuda_graph=graph)
        if not both:
            return video
        return model.interpolate(video, 1, schedule, num_steps, generator=generator, cuda_graph=graph)

    def seeded_pass(graph: bool) -> torch.Tensor:
        generator.manual_seed(1)
        return passes(steps, both=False, graph=graph).float()

    warmup = time.perf_counter()
    passes(1, both=True)
    synchronize(device)
    warmup = time.perf_counter() - warmup
    graph_error = float("nan")
    if cuda_graph and device.type == "cuda":
        graph_error = float((seeded_pass(False) - seeded_pass(True)).abs().max())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first, video = timed(lambda: passes(steps, both=False), device, repeats)
    both, final = timed(lambda: passes(steps, both=True), device, repeats)
    assert video.shape[1] == 61 and final.shape[1] == 241
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"pass1": first, "both": both, "peak": peak, "graph_error": graph_error, "warmup": warmup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="shapes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps per pass (KandinskyVideo 1.1: 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the fastest counts")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay each pass's UNet call as a CUDA graph")
    parser.add_argument("--channels-last", action="store_true", help="both modes' conv weights channels-last")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every mode (static shapes; the untimed warm-up compiles each pass)")
    parser.add_argument("--latents", type=int, nargs="+", help="only these latent sizes of --size")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    schedule = NoiseSchedule(beta_schedule="cosine", prediction_type="v_prediction", timestep_spacing="trailing")

    pass_frames = (NUM_KEYFRAMES, num_frames(NUM_KEYFRAMES))  # keyframes in: 16, then 61
    unet_batch = {"fusionframes": [2 * (t - 1) for t in pass_frames], "mfi": [2 * num_frames(t) for t in pass_frames],
                  "mfi_windows": [2 * WINDOW * (t - 1) for t in pass_frames]}
    rows = ["| size | latents | mode | params | UNet batch per step (pass 1, pass 2) | pass 1 (s) | both passes (s) "
            "| peak GiB |", "|---|---|---|---|---|---|---|---|"]
    ratios = []
    for latent in args.latents or SIZES[args.size][2]:
        results = {}
        for mode in MODES:
            model = build(args.size, mode, device, dtype)
            if args.channels_last:
                channels_last(model)
            if args.compile:
                model.compile(dynamic=False)
            r = results[mode] = measure(model, latent, args.steps, args.repeats, device, dtype, schedule,
                                        args.cuda_graphs)
            if args.compile:
                ratios.append(f"{latent}x{latent} {mode}: untimed 1-step warm-up of both passes (compiles them) "
                              f"{r['warmup']:.0f} s")
            if args.cuda_graphs and device.type == "cuda":
                ratios.append(f"{latent}x{latent} {mode}: graphed vs eager pass 1, max |difference| "
                              f"{r['graph_error']:.2e}")
            peak = "-" if device.type != "cuda" else f"{r['peak']:.1f}"
            rows.append(f"| {args.size} | {latent}x{latent} | {mode} | {model.parameter_counts()['total'] / 1e6:.1f}M "
                        f"| {', '.join(map(str, unet_batch[mode]))} | {r['pass1']:.2f} | {r['both']:.2f} | {peak} |")
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        ff = results["fusionframes"]
        for mode, name in (("mfi", "MFI"), ("mfi_windows", "MFI on 5-frame windows")):
            ratios.append(f"{latent}x{latent}: {name} / FusionFrames = {results[mode]['pass1'] / ff['pass1']:.2f}x "
                          f"(pass 1), {results[mode]['both'] / ff['both']:.2f}x (both passes)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    table = "\n".join(rows + ["", *ratios, "",
                              f"{NUM_KEYFRAMES} keyframes, {args.steps} DDIM steps per pass, fastest of {args.repeats} "
                              f"runs, guidance w=0.25 (cond + uncond in one call), batch 1, "
                              f"{'CUDA graphs, ' if args.cuda_graphs and device.type == 'cuda' else ''}"
                              f"{'channels-last, ' if args.channels_last else ''}"
                              f"{'torch.compile, ' if args.compile else ''}"
                              f"{str(dtype).removeprefix('torch.')}, {name}."])
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
