"""Decoding speed of the temporal MoVQ decoder variants: frames/s and peak memory for a long clip.

Default model: Kandinsky 3's MoVQ at paper size with random weights (diffusers ``VQModel``, norm_type spatial,
block_out_channels (256, 512, 512, 1024), 2 layers per block, attention at the lowest resolution, 8x
downsampling: a 161M-parameter decoder, Table 3's "Image" row). Each variant decodes ``--frames`` latent frames
in chunks (``decode_chunked``); the image decoder row decodes the same frames ``--chunk`` at a time. The first
pass is a warm-up; frames/s is the mean over ``--repeats`` passes; peak memory is CUDA's max allocated (weights
included) and n/a on CPU.

    uv run python benchmarks/decoder_speed.py --device cuda --dtype bf16 --out docs/decoder_speed.md
    uv run python benchmarks/decoder_speed.py --tiny      # CPU smoke test: a 2-level MoVQ at 32 and 64 px
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import VQModel
from einops import rearrange

from fusionframes.models.temporal_decoder import VARIANTS, TemporalMoVQDecoder
from fusionframes.utils.random_kandinsky3 import KANDINSKY_MOVQ

TINY_MOVQ = dict(block_out_channels=(32, 32), layers_per_block=1, latent_channels=4, num_vq_embeddings=16,
                 norm_type="spatial", down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def image_decode(movq: VQModel, latents: torch.Tensor, chunk: int) -> torch.Tensor:
    """Frame-by-frame image decoding of latents (B, F, C, h, w), ``chunk`` frames per call -> (B, F, 3, H, W)."""
    b = latents.shape[0]
    outs = [movq.decode(rearrange(part, "b f c h w -> (b f) c h w"), force_not_quantize=True).sample
            for part in latents.split(chunk, dim=1)]
    return torch.cat([rearrange(o, "(b f) c h w -> b f c h w", b=b) for o in outs], dim=1)


def measure(decode: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, repeats: int,
            device: torch.device) -> tuple[float, float | None]:
    """(frames/s, peak GiB or None on CPU) of ``decode(latents)`` after one warm-up pass."""
    cuda = device.type == "cuda"
    with torch.inference_mode():
        decode(latents)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(repeats):
            decode(latents)
        if cuda:
            torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    return latents.shape[1] / seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--sizes", nargs="+", type=int, help="frame sizes in pixels (default 256 512; tiny 32 64)")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="a 2-level 32-channel MoVQ, for a CPU smoke test")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    sizes = args.sizes or ([32, 64] if args.tiny else [256, 512])

    torch.manual_seed(0)
    movq = VQModel(**(TINY_MOVQ if args.tiny else KANDINSKY_MOVQ)).eval()
    factor = 2 ** (len(movq.config.block_out_channels) - 1)
    for size in sizes:
        if size % factor:
            raise ValueError(f"--sizes must be multiples of the MoVQ factor {factor}, got {size}.")
    decoders = {v: TemporalMoVQDecoder(movq, v, "decoder").to(device, dtype).eval() for v in args.variants}
    movq.to(device, dtype)

    lines = [f"Decoding {args.frames} frames, chunk {args.chunk} (overlap {args.overlap}), {args.dtype}, "
             f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
             f"MoVQ block_out_channels {tuple(movq.config.block_out_channels)}.", "",
             "| Decoder | # Params | Size | Frames/s | Peak memory (GiB) |", "|---|---|---|---|---|"]
    image_params = sum(p.numel() for p in (*movq.post_quant_conv.parameters(), *movq.decoder.parameters()))
    for size in sizes:
        latents = torch.randn(1, args.frames, movq.config.latent_channels, size // factor, size // factor,
                              device=device, dtype=dtype)
        runs = [("image (per frame)", image_params, lambda z: image_decode(movq, z, args.chunk))]
        runs += [(v, d.parameter_counts()["total"], lambda z, d=d: d.decode_chunked(z, args.chunk, args.overlap))
                 for v, d in decoders.items()]
        for name, count, decode in runs:
            fps, peak = measure(decode, latents, args.repeats, device)
            lines.append(f"| {name} | {count / 1e6:.1f} M | {size}x{size} | {fps:.2f} | "
                         f"{'n/a' if peak is None else f'{peak:.2f}'} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
