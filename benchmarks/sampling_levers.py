"""Speed levers of paper-size sampling, one network call at a time: weight precision, memory layout, torch.compile.

Two calls dominate sampling at 512x512: the keyframe UNet's classifier-free-guidance call (Conv1dAttn1dBlocks on
Kandinsky3UNet, 2 x 16 frames of 64x64 latents, 4096-wide text of 128 tokens) and one window of the temporal
decoder (``conv3x3x3_attn`` on Kandinsky 3's MoVQ, 16 latent frames -> 16 frames of 512x512; the frame-by-frame
image decoder beside it). Each is timed, on random weights, as

- ``bf16-mixed``: float32 weights under bf16 autocast (norms in float32, weights cast on every call);
- ``bf16-true``: weights cast to bf16, no autocast (``FusionFramesPipeline.to(dtype=torch.bfloat16)``);
- ``+ channels-last``: bf16-true with conv weights (and so activations) channels-last;
- ``+ compile`` (``--compile``): ``torch.compile`` of the bf16 network, contiguous and channels-last.

Milliseconds per call are the mean of ``--repeats`` calls after ``--warmup`` calls (which include compilation).

    python benchmarks/sampling_levers.py --device cuda --compile
    uv run python benchmarks/sampling_levers.py --tiny    # CPU smoke test at tiny sizes
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from diffusers import Kandinsky3UNet, VQModel

from benchmarks.decoder_speed import TINY_MOVQ
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.temporal_decoder import TemporalMoVQDecoder
from fusionframes.utils.memory_format import channels_last
from fusionframes.utils.random_kandinsky3 import KANDINSKY_MOVQ, TINY_KANDINSKY3_UNET

FRAMES = 16


def timed(call: Callable[[], torch.Tensor], device: torch.device, warmup: int, repeats: int) -> float:
    """Mean milliseconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats * 1e3


def settings(module: torch.nn.Module, call: Callable[[torch.nn.Module, torch.dtype], torch.Tensor],
             device: torch.device, compile_too: bool) -> Iterator[tuple[str, Callable[[], torch.Tensor]]]:
    """(setting, zero-argument call) in the module docstring's order; ``call(module, input dtype)``. The module is
    converted in place between settings, so each closure must run before the next one is built."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def mixed() -> torch.Tensor:
        with autocast:
            return call(module, torch.float32)

    def true(network: Callable) -> Callable[[], torch.Tensor]:
        return lambda: call(network, torch.bfloat16)

    yield "bf16-mixed", mixed
    module.to(torch.bfloat16)
    yield "bf16-true", true(module)
    if compile_too:
        yield "bf16-true + compile", true(torch.compile(module))
    yield "bf16-true + channels-last", true(channels_last(module))
    if compile_too:
        torch._dynamo.reset()
        yield "bf16-true + channels-last + compile", true(torch.compile(module))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny Kandinsky3UNet and MoVQ, 16x16 latents")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd networks")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    latent, text = (16, 16) if args.tiny else (64, 4096)
    torch.manual_seed(0)
    with torch.device(device):
        keyframes = KeyframeUNet(Kandinsky3UNet(**(TINY_KANDINSKY3_UNET if args.tiny else {})), "conv1d_attn1d_blocks",
                                 num_frames=FRAMES).eval()
        movq = VQModel(**(TINY_MOVQ if args.tiny else KANDINSKY_MOVQ)).eval()
        decoder = TemporalMoVQDecoder(movq, "conv3x3x3_attn").eval()
        sample = torch.randn(2, FRAMES, 4, latent, latent)
        context, mask = torch.randn(2, 128, text), torch.ones(2, 128, dtype=torch.bool)
        timestep, positions = torch.full((2,), 500), (torch.arange(FRAMES) * 12).expand(2, FRAMES)
        window = torch.randn(1, FRAMES, 4, latent, latent)

    calls = {
        "keyframe UNet, CFG call (2 x 16 frames)": (keyframes, lambda net, dtype: net(
            sample.to(dtype), timestep, context.to(dtype), mask, positions)),
        "temporal decoder conv3x3x3_attn, one window of 16 frames": (decoder, lambda net, dtype: net(
            window.to(dtype))),
        "image decoder, 16 frames": (movq, lambda net, dtype: net.decode(
            window[0].to(dtype), force_not_quantize=True).sample),
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    size = "tiny" if args.tiny else "paper"
    lines = [f"{size} size, {latent * 8}x{latent * 8} frames, {name}; mean of {args.repeats} calls after "
             f"{args.warmup}", "", "| network | setting | ms per call |", "|---|---|---|"]
    with torch.no_grad():
        for network, (module, call) in calls.items():
            for setting, run in settings(module, call, device, args.compile):
                lines.append(f"| {network} | {setting} | {timed(run, device, args.warmup, args.repeats):.1f} |")
                print(lines[-1], flush=True)
            module.cpu()
            torch._dynamo.reset()
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
