"""What ``sample.py`` does: load a pipeline, generate videos for a prompt (or between two keyframes with
``inbetween.method``), write mp4, gif and keyframe strip."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from fusionframes.models.backward_motion import BackwardKeyframeUNet
from fusionframes.pipeline import COMPILE_STAGES, FPS_MODES, FusionFramesPipeline, check_sampling_args
from fusionframes.sampling.time_reversal.inbetween import (
    inbetween,
    load_backward,
    load_keyframe,
    method_config,
    methods,
    needs_backward,
)
from fusionframes.utils.media import image_grid, save_image, save_video, to_uint8
from fusionframes.utils.validation import check_int


def stage_dir(path: str | None, stage: str) -> str | None:
    """A train.py run directory (holding ``export/<stage>``) or an export directory -> the export directory."""
    if path is None:
        return None
    exported = Path(path) / "export" / stage
    return str(exported) if exported.is_dir() else path


def output_stem(prompt: str, seed: int, index: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:80] or "video"
    return f"{slug}_seed{seed}_{index}"


#: ``precision=`` (Lightning's names) -> (dtype the networks are cast to, autocast dtype); auto picks by device.
PRECISIONS: dict[str, tuple[torch.dtype | None, torch.dtype | None]] = {
    "32-true": (None, None), "bf16-mixed": (None, torch.bfloat16), "bf16-true": (torch.bfloat16, None)}


def check_precision(value: object, device: torch.device) -> tuple[torch.dtype | None, torch.dtype | None]:
    """``precision=`` -> (weights dtype, autocast dtype); ``auto`` is bf16-mixed on CUDA and 32-true on CPU."""
    if value == "auto":
        value = "bf16-mixed" if device.type == "cuda" else "32-true"
    if value not in PRECISIONS:
        raise ValueError(f"precision={value!r} is not supported; use auto, {', '.join(PRECISIONS)}.")
    return PRECISIONS[value]


def compile_stages(value: object) -> tuple[str, ...]:
    """``compile=``: true (every network), false (none) or a list of stages among :data:`COMPILE_STAGES`."""
    if isinstance(value, bool):
        return COMPILE_STAGES if value else ()
    if isinstance(value, Sequence) and not isinstance(value, str) and set(value) <= set(COMPILE_STAGES):
        return tuple(value)
    raise ValueError(f"compile must be true, false or a list of stages among {list(COMPILE_STAGES)}, got {value!r}.")


def check_config(cfg: DictConfig) -> tuple[torch.device, DictConfig | None]:
    """Check every ``sample.py`` value before any weights load (the prompt's words are checked by the
    pipeline's text encoder); returns the device to run on and the inbetweening method's config (None for
    text-to-video)."""
    if not isinstance(cfg.prompt, str) or not cfg.prompt.strip():
        raise ValueError(f"prompt must be a text such as 'a red circle moving right', got {cfg.prompt!r}.")
    check_sampling_args(cfg.fps, cfg.steps, cfg.guidance_scale, cfg.interpolation_steps, cfg.interpolation_guidance,
                        cfg.seed, cfg.decode_chunk, names={"num_inference_steps": "steps"})
    check_int("num_videos", cfg.num_videos, 1)
    for key in ("overwrite", "progress", "cuda_graphs"):
        if not isinstance(cfg[key], bool):
            raise ValueError(f"{key} must be true or false, got {cfg[key]!r}.")
    compile_stages(cfg.compile)
    if not isinstance(cfg.output_dir, str) or Path(cfg.output_dir).is_file():
        raise ValueError(f"output_dir must be a directory path, got {cfg.output_dir!r}.")
    method = check_inbetween(cfg)
    device = check_device(cfg.device)
    check_precision(cfg.precision, device)
    return device, method


def check_device(value: object) -> torch.device:
    """``device=`` (auto, cpu, cuda or cuda:<index>) -> a device present on this machine."""
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value) if isinstance(value, str) else None
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={value!r} is not a device; use auto, cpu, cuda or cuda:<index>.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={value!r} is not available here ({torch.cuda.device_count()} CUDA devices); "
                         "use device=auto or cpu.")
    return device


def check_inbetween(cfg: DictConfig) -> DictConfig | None:
    """The method config of an inbetweening run (None for text-to-video), its ``inbetween`` values checked."""
    settings = cfg.inbetween
    if settings.method is None:
        if settings.start is not None or settings.end is not None:
            raise ValueError(f"inbetween.start/end are set but inbetween.method is not; choose one of {methods()}.")
        return None
    for key in ("start", "end"):
        if not isinstance(settings[key], str) or not settings[key]:
            raise ValueError(f"inbetween.{key} must be the path of an image file or a .safetensors keyframe latent, "
                             f"got {settings[key]!r}.")
    check_int("inbetween.num_frames", settings.num_frames, 3)
    if settings.settings is not None and not isinstance(settings.settings, Mapping):
        raise ValueError(f"inbetween.settings must be a mapping of sampler settings such as {{num_steps: 10}}, got "
                         f"{settings.settings!r}.")
    method = method_config(settings.method, settings.settings)
    if needs_backward(method) and not (isinstance(settings.backward_dir, str) and settings.backward_dir):
        raise ValueError(f"inbetween.method={settings.method} needs inbetween.backward_dir, an export of "
                         "experiment=gi_backward (<run>/export/gi_backward).")
    return method


def load_pipeline(cfg: DictConfig, keyframes_dir: str | None) -> FusionFramesPipeline:
    return FusionFramesPipeline.from_pretrained(
        cfg.pipeline_dir, keyframes_dir, stage_dir(cfg.interpolation_dir, "interpolation"),
        stage_dir(cfg.decoder_dir, "decoder"))


def save_outputs(pipeline: FusionFramesPipeline, out: Path, stems: list[str], videos: torch.Tensor,
                 keyframes: torch.Tensor, fps: str) -> list[Path]:
    """mp4 + gif of each video (B, N, 3, H, W) and a png strip of its decoded keyframe latents (B, F, C, h, w)."""
    keyframe_frames = pipeline.codec.decode(keyframes.float()).clamp(-1, 1)
    written: list[Path] = []
    for stem, video, frames in zip(stems, videos, keyframe_frames):
        written += save_video(to_uint8(video), out / stem, fps=round(pipeline.fps(fps)))
        written.append(save_image(image_grid(frames), out / f"{stem}_keyframes.png"))
    return written


def run(cfg: DictConfig) -> list[Path]:
    """Generate ``cfg.num_videos`` videos for ``cfg.prompt``; returns the written paths (mp4, gif, png each).

    Refuses to overwrite earlier outputs of the same prompt and seed unless ``cfg.overwrite``.
    """
    device, method = check_config(cfg)
    out = Path(cfg.output_dir)
    name = cfg.prompt if method is None else f"{cfg.inbetween.method} {cfg.prompt}"
    stems = [output_stem(name, cfg.seed, i) for i in range(cfg.num_videos)]
    existing = [p for s in stems for p in out.glob(f"{s}*") if p.suffix in (".mp4", ".gif", ".png")]
    if existing and not cfg.overwrite:
        raise FileExistsError(f"{existing[0]} already exists; pass overwrite=true or another output_dir or seed.")
    if method is not None:
        return run_inbetween(cfg, method, device, out, stems)
    weights, autocast = check_precision(cfg.precision, device)
    pipeline = load_pipeline(cfg, stage_dir(cfg.keyframes_dir, "keyframes")).to(device, weights)
    stages = compile_stages(cfg.compile)
    if stages:
        pipeline.compile(stages)
    result = pipeline([cfg.prompt] * cfg.num_videos, fps=cfg.fps, num_inference_steps=cfg.steps,
                      guidance_scale=cfg.guidance_scale, interpolation_steps=cfg.interpolation_steps,
                      interpolation_guidance=cfg.interpolation_guidance, seed=cfg.seed, decode_chunk=cfg.decode_chunk,
                      progress=cfg.progress, dtype=autocast, cuda_graphs=cfg.cuda_graphs)
    print(" | ".join(f"{stage}: {sec:.2f} s" for stage, sec in result["seconds"].items()))
    return save_outputs(pipeline, out, stems, result["video"], result["keyframes"], cfg.fps)


def run_inbetween(cfg: DictConfig, method: DictConfig, device: torch.device, out: Path,
                  stems: list[str]) -> list[Path]:
    """``cfg.num_videos`` videos from ``inbetween.start`` to ``inbetween.end``: the method's F keyframes between
    them (frame_stride apart), then the interpolation passes of ``fps``."""
    settings = cfg.inbetween
    keyframes_dir = stage_dir(cfg.keyframes_dir, "keyframes")
    backward_dir = None
    if needs_backward(method):
        backward_dir = stage_dir(settings.backward_dir, "gi_backward")
        trained_on = BackwardKeyframeUNet.read_config(backward_dir, "inbetween.backward_dir").get("forward_dir")
        if keyframes_dir is None and trained_on is not None and Path(trained_on).is_dir():
            keyframes_dir = trained_on  # the forward model the backward one was trained on
    weights, autocast = check_precision(cfg.precision, device)
    pipeline = load_pipeline(cfg, keyframes_dir).to(device, weights)
    start, end = (load_keyframe(settings[key], f"inbetween.{key}", pipeline.codec, pipeline.resolution)
                  .expand(cfg.num_videos, -1, -1, -1) for key in ("start", "end"))
    backward = None if backward_dir is None else load_backward(
        backward_dir, pipeline, keyframes_dir or Path(cfg.pipeline_dir) / "keyframes")
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    began = time.perf_counter()
    with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        keyframes = inbetween(pipeline, start, end, cfg.prompt, method, settings.num_frames, backward, generator,
                              cfg.progress)
        latents = keyframes
        for skip in FPS_MODES[cfg.fps]:
            latents = pipeline.interpolation.interpolate(latents, skip, pipeline.interpolation_schedule,
                                                         cfg.interpolation_steps, cfg.interpolation_guidance,
                                                         generator=generator, progress=cfg.progress)
        video = pipeline.decode(latents, cfg.decode_chunk).float().clamp(-1, 1)
    print(f"inbetweening ({settings.method}), interpolation and decoding: {time.perf_counter() - began:.2f} s")
    return save_outputs(pipeline, out, stems, video, keyframes, cfg.fps)
