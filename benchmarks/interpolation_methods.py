"""Interpolation methods compared on the shapes world, from the same ground-truth keyframes.

For each test video (a ShapesWorld of the training world's length, seed 99) T true keyframes 4s source frames
apart are encoded with the MoVQ, and each method fills the 3 frames between every pair (4T - 3 frames, s source
frames apart), which are decoded by the pipeline's decoder and compared with the truth:

- PSNR (dB, frames in [0, 1]) of the in-between frames, and of the keyframe positions (the MoVQ round trip for
  methods that keep the keyframes; ZeroSmooth regenerates them);
- ground-truth motion scores from pixels (``fusionframes.metrics.shapes``): centroid error (px) of the
  in-between frames against the true track, direction accuracy, trajectory smoothness (the truth's on top);
- seconds per video for the latent interpolation alone (batch 1, CUDA-synchronised; decoding excluded).

Methods: ``fusionframes`` (the pipeline's interpolator, one pass with skip s), ``mfi`` (Masked Frame
Interpolation, ``--mfi-dir``: an export of ``experiment=interpolation_mfi``), ``fvdm`` (the per-frame schedule
[0, t, t, t, 0, ...] over windows of keyframes, with the shipped scalar-trained keyframe model and, with
``--fvdm-dir``, an FVDM-trained one), ``zerosmooth`` (two 2x stages in the inclusive layout over the shipped
keyframe model, its short branch replaying the true keyframes). The keyframe-model samplers use the true
caption with classifier-free guidance; the interpolators use none. The time-reversal samplers ``trf``, ``vibid``,
``mpd_trf`` and ``mpd_vibid`` (``conf/inbetween``; Motion Prior Distillation over TRF and ViBiD) fill each pair of
keyframes as a 5-frame clip with the keyframe model as image-to-video model (the ``--fvdm-dir`` model if given,
else the shipped one), all pairs of a video in one batch, at their configs' settings (``--inbetween`` overrides
them); ``gi`` (Generative Inbetweening, ``--gi-backward``: an export of ``experiment=gi_backward`` trained on that
model) does the same with its backward-motion model. Prints and writes a markdown table.

    uv run python benchmarks/interpolation_methods.py --device cuda --mfi-dir <run>/export/interpolation \
        --fvdm-dir <run>/export/keyframes --gi-backward <run>/export/gi_backward \
        --out interpolation_methods.md   # a section of docs/results.md
    uv run python benchmarks/interpolation_methods.py --videos 1 --keyframes 4 --steps 2 --interpolation-steps 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchmetrics.functional.image import peak_signal_noise_ratio

from fusionframes.config import CONFIG_DIR
from fusionframes.data.samplers import frames_to_tensor
from fusionframes.data.shapes import ShapesWorld
from fusionframes.metrics.shapes import Track, classify_motion, measure, smoothness
from fusionframes.models.backward_motion import BackwardKeyframeUNet
from fusionframes.models.interpolation_unet import InterpolationUNet, interleave
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.temporal import refine_positions
from fusionframes.pipeline import FusionFramesPipeline
from fusionframes.sampling.fvdm import FVDMSampler
from fusionframes.sampling.time_reversal.base import build_sampler
from fusionframes.sampling.time_reversal.denoiser import I2VDenoiser
from fusionframes.sampling.zerosmooth import ZeroSmoothConfig, ZeroSmoothSampler
from fusionframes.utils.media import image_grid, save_image, to_uint8
from fusionframes.utils.resolvers import ASSETS_DIR

BETWEEN = 3
INBETWEEN = ("trf", "vibid", "mpd_trf", "mpd_vibid")  # time-reversal samplers, configs of conf/inbetween
WORLD_FRAMES = 400  # conf/data/shapes.yaml: the training world's length sets the speed of motion per frame

#: method(keyframe latents (1, T, C, h, w), positions (1, T), caption, generator) -> latents (1, 4T-3, C, h, w)
Method = Callable[[torch.Tensor, torch.Tensor, str, torch.Generator], torch.Tensor]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def centroid_error(track: Track, truth: Track, frames: np.ndarray) -> float:
    """Mean distance (px) between measured and true centroids over ``frames`` (NaN-aware)."""
    return float(np.nanmean(np.linalg.norm(track.centroid[frames] - truth.centroid[frames], axis=1)))


def inbetween_config(name: str, overrides: list[str]) -> DictConfig:
    """``conf/inbetween/<name>.yaml`` with the ``KEY=VALUE`` overrides it has: a key the config lacks goes to its
    base sampler's config (MPD's ``base``) if that has it, and is skipped otherwise."""
    config = OmegaConf.load(CONFIG_DIR / "inbetween" / f"{name}.yaml")
    for key, value in OmegaConf.from_dotlist(overrides).items():
        for node in (config, config.get("base")):
            if node is not None and key in node:
                node[key] = value
                break
    return config


def methods(pipe: FusionFramesPipeline, args: argparse.Namespace) -> dict[str, tuple[str, Method]]:
    """name -> (model description, method) for every method the arguments make available."""
    device = pipe.device
    schedule = pipe.t2i.schedule

    def text(caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        return pipe.t2i.text_encoder.encode([caption, ""])

    def interpolator(model: InterpolationUNet, skip: int) -> Method:
        return lambda keyframes, positions, caption, g: model.interpolate(
            keyframes, skip, pipe.interpolation_schedule, args.interpolation_steps, args.interpolation_guidance,
            generator=g)

    def fvdm(model: KeyframeUNet) -> Method:
        sampler = FVDMSampler(model, schedule, args.steps, args.guidance)
        return lambda keyframes, positions, caption, g: sampler.infill(
            keyframes, positions, *text(caption), BETWEEN, args.fvdm_window, generator=g)

    config = OmegaConf.to_object(OmegaConf.merge(
        OmegaConf.structured(ZeroSmoothConfig(layout="inclusive", num_stages=2, scale=2,
                                              num_inference_steps=args.steps, guidance_scale=args.guidance)),
        OmegaConf.from_dotlist(args.zerosmooth)))
    zerosmooth = ZeroSmoothSampler(pipe.keyframes, schedule, config)

    def zerosmooth_method(keyframes: torch.Tensor, positions: torch.Tensor, caption: str,
                          g: torch.Generator) -> torch.Tensor:
        context, mask = text(caption)
        return zerosmooth(context, mask, positions.repeat(2, 1), tuple(keyframes.shape), keyframes, g)[-1]

    def inbetween(model: KeyframeUNet, name: str, backward: BackwardKeyframeUNet | None = None) -> Method:
        config = inbetween_config(name, args.inbetween)

        def method(keyframes: torch.Tensor, positions: torch.Tensor, caption: str,
                   g: torch.Generator) -> torch.Tensor:
            pairs = keyframes.shape[1] - 1  # one clip [start, 3 in-betweens, end] per pair of keyframes, one batch
            context, mask = text(caption)
            context = context.repeat_interleave(pairs, dim=0)  # [caption, ""] -> B captions then B empty ones
            mask = None if mask is None else mask.repeat_interleave(pairs, dim=0)
            clip_positions = refine_positions(torch.stack([positions[0, :-1], positions[0, 1:]], dim=1), BETWEEN + 1)
            clip_positions = clip_positions - clip_positions[:, :1]
            runtime = {"denoiser": I2VDenoiser(model, schedule, context, mask, clip_positions), "schedule": schedule}
            if backward is not None:  # GI's backward-motion model, same text and positions
                runtime["backward"] = I2VDenoiser(backward, schedule, context, mask, clip_positions)
            clips = build_sampler(config, **runtime).sample(keyframes[0, :-1], keyframes[0, 1:], BETWEEN + 2,
                                                            generator=g)
            return interleave(keyframes, clips[None, :, 1:-1])

        return method

    found = {"fusionframes": ("shipped interpolator", lambda skip: interpolator(pipe.interpolation, skip))}
    if args.mfi_dir:
        mfi = InterpolationUNet.from_pretrained(args.mfi_dir, config_key="--mfi-dir").to(device).eval()
        found["mfi"] = (str(args.mfi_dir), lambda skip: interpolator(mfi, skip))
    found["fvdm (scalar-trained)"] = ("shipped keyframes", lambda skip: fvdm(pipe.keyframes))
    i2v = ("shipped keyframes", pipe.keyframes)
    if args.fvdm_dir:
        trained = KeyframeUNet.from_pretrained(args.fvdm_dir, pipe.t2i.unet, config_key="--fvdm-dir").to(device)
        found["fvdm"] = (str(args.fvdm_dir), lambda skip: fvdm(trained.eval()))
        i2v = (str(args.fvdm_dir), trained.eval())
    found["zerosmooth"] = ("shipped keyframes", lambda skip: zerosmooth_method)
    for name in INBETWEEN:
        found[name] = (i2v[0], lambda skip, name=name: inbetween(i2v[1], name))
    if args.gi_backward:
        forward_dir = args.fvdm_dir or Path(args.pipeline_dir) / "keyframes"  # the weights it must be trained on
        backward = BackwardKeyframeUNet.from_pretrained(args.gi_backward, i2v[1], forward_dir, "--gi-backward")
        found["gi"] = (str(args.gi_backward), lambda skip: inbetween(i2v[1], "gi", backward.to(device).eval()))
    return found


def evaluate(pipe: FusionFramesPipeline, args: argparse.Namespace, skip: int) -> list[str]:
    """Markdown rows of every method (and the ground truth) at skip ``skip``."""
    device = pipe.device
    num_keyframes = args.keyframes or min(16, (WORLD_FRAMES - 1) // (4 * skip) + 1)
    world = ShapesWorld(resolution=pipe.resolution, num_frames=WORLD_FRAMES, seed=99)
    frame_indices = np.arange((num_keyframes - 1) * BETWEEN + num_keyframes) * skip
    between = np.ones(len(frame_indices), dtype=bool)
    between[:: BETWEEN + 1] = False
    available = methods(pipe, args)
    scores: dict[str, list[tuple[float, ...]]] = {name: [] for name in ["ground truth", *available]}
    strips: list[torch.Tensor] = []  # the first video: truth, then every method, one row each
    for index in range(args.videos):
        scene = world.scene(index)
        frames = frames_to_tensor(world.render(scene, frame_indices)).to(device)
        truth = measure(to_uint8(frames))
        scores["ground truth"].append((float("nan"),) * 3 + (classify_motion(truth) == scene.motion,
                                                             smoothness(truth), float("nan")))
        if index == 0:
            strips.append(frames)
        keyframes = pipe.codec.encode(frames[:: BETWEEN + 1][None])
        positions = torch.as_tensor(frame_indices[:: BETWEEN + 1], device=device)[None]
        for name, (_, make) in available.items():
            method = make(skip)
            generator = torch.Generator(device).manual_seed(args.seed + index)
            synchronize(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                latents = method(keyframes, positions, scene.caption(), generator)
            synchronize(device)
            seconds = time.perf_counter() - start
            video = pipe.decode(latents.float())[0].float().clamp(-1, 1)
            track = measure(to_uint8(video))
            if index == 0:
                strips.append(video)
            psnr = [float(peak_signal_noise_ratio((video[m] + 1) / 2, (frames[m] + 1) / 2, data_range=1.0))
                    for m in (between, ~between)]
            scores[name].append((*psnr, centroid_error(track, truth, between), classify_motion(track) == scene.motion,
                                 smoothness(track), seconds))
    if args.strips:
        path = save_image(image_grid(torch.cat(strips), nrow=len(frame_indices)), args.strips / f"s{skip}.png")
        print(f"rows of {path}: {', '.join(scores)}")
    rows = []
    for name, values in scores.items():
        mean = np.nanmean(np.array(values, dtype=np.float64), axis=0) if values else [float("nan")] * 6
        model = available[name][0] if name in available else "true frames"
        cells = " | ".join("-" if np.isnan(v) else f"{v:.{d}f}" for v, d in zip(mean, (2, 2, 2, 2, 3, 3)))
        rows.append(f"| {skip} | {num_keyframes} -> {len(frame_indices)} | {name} | {model} | {cells} |")
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline-dir", default=str(ASSETS_DIR / "shapes"))
    parser.add_argument("--mfi-dir", type=Path, help="export of an experiment=interpolation_mfi run")
    parser.add_argument("--fvdm-dir", type=Path, help="export of an experiment=keyframes_fvdm run")
    parser.add_argument("--gi-backward", type=Path,
                        help="export of an experiment=gi_backward run on the --fvdm-dir model (or the shipped one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skips", type=int, nargs="+", default=[3, 12],
                        help="s: in-betweens s source frames apart (3: 2 -> 8 fps; 12: 0.5 -> 2 fps)")
    parser.add_argument("--keyframes", type=int, help="T keyframes per video (default: up to 16 that fit the world)")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps of the keyframe-model samplers")
    parser.add_argument("--guidance", type=float, default=5.0, help="their classifier-free guidance")
    parser.add_argument("--interpolation-steps", type=int, default=10)
    parser.add_argument("--interpolation-guidance", type=float, default=0.25)
    parser.add_argument("--fvdm-window", type=int, default=4, help="keyframes per FVDM sampling window")
    parser.add_argument("--inbetween", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings of the time-reversal samplers (conf/inbetween) where they have them, "
                             "e.g. num_steps=10 recurrence=1")
    parser.add_argument("--zerosmooth", nargs="*", default=[], metavar="KEY=VALUE",
                        help="ZeroSmoothConfig overrides, e.g. lambda_schedule=constant lambda_value=0.5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--strips", type=Path, help="write the first video of every method as s<s>.png here")
    args = parser.parse_args(argv)
    known = set()
    for name in (*INBETWEEN, "gi"):
        config = inbetween_config(name, [])
        known |= {key for key in [*config, *config.get("base", {})] if key not in ("_target_", "base")}
    unknown = sorted(set(OmegaConf.from_dotlist(args.inbetween)) - known)
    if unknown:
        parser.error(f"--inbetween {unknown[0]} is not a setting of the conf/inbetween samplers; use one of "
                     f"{sorted(known)}.")
    pipe = FusionFramesPipeline.from_pretrained(args.pipeline_dir).to(args.device)
    device = torch.cuda.get_device_name() if pipe.device.type == "cuda" else "CPU"
    header = ["| s | keyframes -> frames | method | model | PSNR in-betweens (dB) | PSNR keyframes (dB) | "
              "centroid error (px) | direction accuracy | smoothness | seconds / video |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    rows: list[str] = []
    with torch.no_grad():
        for skip in args.skips:  # each s's rows print as they come, so a run cut short still shows them
            skip_rows = evaluate(pipe, args, skip)
            print("\n".join(skip_rows), flush=True)
            rows += skip_rows
    table = "\n".join([*header, *rows, "",
                       f"{args.videos} videos per s (ShapesWorld seed 99, {WORLD_FRAMES} frames), keyframe-model "
                       f"samplers {args.steps} DDIM steps with guidance {args.guidance}, interpolators "
                       f"{args.interpolation_steps} steps with w={args.interpolation_guidance}, FVDM windows of "
                       f"{args.fvdm_window} keyframes, ZeroSmooth {' '.join(args.zerosmooth) or 'defaults'} "
                       f"(inclusive layout, 2 stages of 2x), time-reversal samplers at their conf/inbetween "
                       f"settings{' with ' + ' '.join(args.inbetween) if args.inbetween else ''}, {device}."])
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
