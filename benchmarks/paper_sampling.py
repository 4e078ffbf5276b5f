"""End-to-end text-to-video sampling at the paper's size, random weights: seconds per stage.

The pipeline is built in memory from a random Kandinsky 3 directory (``scripts/make_random_kandinsky3.py``):
the keyframe model is Conv1dAttn1dBlocks on its UNet, the interpolator a second copy of the UNet inflated by
``InterpolationUNet``, the MoVQ a random ``VQModel`` of Kandinsky's MoVQ configuration (ch 256, ch_mult
[1, 2, 2, 4], 2 residual blocks, attention at the lowest resolution, 4 latent channels; KandinskyVideo's
``image_movq``) and the temporal decoder ``TemporalMoVQDecoder(conv3x3x3_attn)`` on it. 512x512 frames: 16
keyframes (50 steps, CFG), two interpolation passes (default 10 steps) to 241 frames, temporal decoding of all
241 frames. Random weights make random videos, which take the same time as real ones.

    python scripts/make_random_kandinsky3.py /tmp/k3 --device cuda --dtype bf16
    python benchmarks/paper_sampling.py --kandinsky3 /tmp/k3 --device cuda [--precision autocast|bf16]
        [--compile keyframes interpolation decoder] [--cuda-graphs]

``--precision bf16`` casts every network to bf16 and samples without autocast (``FusionFramesPipeline.to(dtype=)``);
``autocast`` keeps float32 weights under bf16 autocast. ``--compile`` names the stages to ``torch.compile``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import torch
from diffusers import VQModel

from fusionframes.diffusion import NoiseSchedule
from fusionframes.models.interpolation_unet import InterpolationUNet
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.latents import LatentCodec
from fusionframes.models.t2i import TextToImageModel
from fusionframes.models.temporal_decoder import TemporalMoVQDecoder
from fusionframes.pipeline import COMPILE_STAGES, FusionFramesPipeline
from fusionframes.utils.random_kandinsky3 import KANDINSKY_MOVQ

PROMPT = "a red circle moving right quickly on a black background"


def build(kandinsky3: Path, movq: dict, resolution: int, device: torch.device) -> FusionFramesPipeline:
    """The paper-shaped pipeline with random temporal, interpolation and decoder weights on ``device``."""
    t2i = TextToImageModel.from_kandinsky3(kandinsky3, config_key="--kandinsky3")
    interpolation_unet = copy.deepcopy(t2i.unet)
    context, mask = t2i.text_encoder.encode([""])
    keyframes = KeyframeUNet(t2i.unet, "conv1d_attn1d_blocks", num_frames=16)
    interpolation = InterpolationUNet(interpolation_unet, context[0], mask[0])
    schedule = NoiseSchedule(beta_schedule="cosine", prediction_type="v_prediction", timestep_spacing="trailing")
    torch.manual_seed(0)
    with torch.device(device):
        vq = VQModel(**movq)
    codec = LatentCodec(vq)
    decoder = TemporalMoVQDecoder(copy.deepcopy(vq), "conv3x3x3_attn")
    return FusionFramesPipeline(t2i, keyframes, interpolation, schedule, codec, decoder, resolution).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kandinsky3", type=Path, required=True, help="a (random) Kandinsky 3 pipeline directory")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50, help="keyframe DDIM steps")
    parser.add_argument("--interpolation-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up run")
    parser.add_argument("--precision", choices=["autocast", "bf16"], default="bf16",
                        help="on CUDA: bf16 weights without autocast, or float32 weights under bf16 autocast")
    parser.add_argument("--compile", nargs="*", choices=COMPILE_STAGES, default=None,
                        help="torch.compile these stages (FusionFramesPipeline.compile; no names: all)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="CUDA graphs for the keyframe stage and the interpolation passes")
    parser.add_argument("--decode-chunk", type=int, default=16, help="latent frames per temporal-decoder window")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    pipeline = build(args.kandinsky3, KANDINSKY_MOVQ, args.resolution, device)
    low_precision = device.type == "cuda" and args.precision == "bf16"
    if low_precision:
        pipeline.to(device, torch.bfloat16)
    if args.compile is not None:
        pipeline.compile(args.compile or COMPILE_STAGES)
    dtype = torch.bfloat16 if device.type == "cuda" and not low_precision else None
    runs = [pipeline(PROMPT, fps="high", num_inference_steps=args.steps, interpolation_steps=args.interpolation_steps,
                     seed=i, progress=False, dtype=dtype, cuda_graphs=args.cuda_graphs,
                     decode_chunk=args.decode_chunk)["seconds"]
            for i in range(args.repeats + 1)][1:]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"{args.resolution}x{args.resolution}, 16 keyframes ({args.steps} steps, CFG) -> 61 -> 241 frames "
             f"({args.interpolation_steps} interpolation steps per pass), temporal decoder; {name}, "
             f"{'bf16 autocast' if dtype else 'bf16 weights' if low_precision else 'float32'}"
             f"{f', torch.compile of {args.compile or list(COMPILE_STAGES)}' if args.compile is not None else ''}"
             f"{', CUDA graphs' if args.cuda_graphs else ''}, decoder windows of {args.decode_chunk} latent frames; "
             f"mean of {args.repeats} runs after a warm-up", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {statistics.mean(r[stage] for r in runs):.2f} |" for stage in runs[0]]
    lines.append(f"| **total** | **{statistics.mean(sum(r.values()) for r in runs):.2f}** |")
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
