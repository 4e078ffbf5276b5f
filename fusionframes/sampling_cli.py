"""What ``sample.py`` does: load a pipeline, generate videos for a prompt, write mp4, gif and keyframe strip."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from omegaconf import DictConfig

from fusionframes.pipeline import FusionFramesPipeline, check_sampling_args
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


def check_config(cfg: DictConfig) -> torch.device:
    """Check every ``sample.py`` value before any weights load (the prompt's words are checked by the
    pipeline's text encoder); returns the device to run on."""
    if not isinstance(cfg.prompt, str) or not cfg.prompt.strip():
        raise ValueError(f"prompt must be a text such as 'a red circle moving right', got {cfg.prompt!r}.")
    check_sampling_args(cfg.fps, cfg.steps, cfg.guidance_scale, cfg.interpolation_steps, cfg.interpolation_guidance,
                        cfg.seed, cfg.decode_chunk, names={"num_inference_steps": "steps"})
    check_int("num_videos", cfg.num_videos, 1)
    for key in ("overwrite", "progress"):
        if not isinstance(cfg[key], bool):
            raise ValueError(f"{key} must be true or false, got {cfg[key]!r}.")
    if not isinstance(cfg.output_dir, str) or Path(cfg.output_dir).is_file():
        raise ValueError(f"output_dir must be a directory path, got {cfg.output_dir!r}.")
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(cfg.device) if isinstance(cfg.device, str) else None
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={cfg.device!r} is not a device; use auto, cpu, cuda or cuda:<index>.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={cfg.device!r} is not available here ({torch.cuda.device_count()} CUDA devices); "
                         "use device=auto or cpu.")
    return device


def run(cfg: DictConfig) -> list[Path]:
    """Generate ``cfg.num_videos`` videos for ``cfg.prompt``; returns the written paths (mp4, gif, png each).

    Refuses to overwrite earlier outputs of the same prompt and seed unless ``cfg.overwrite``.
    """
    device = check_config(cfg)
    out = Path(cfg.output_dir)
    stems = [output_stem(cfg.prompt, cfg.seed, i) for i in range(cfg.num_videos)]
    existing = [p for s in stems for p in out.glob(f"{s}*") if p.suffix in (".mp4", ".gif", ".png")]
    if existing and not cfg.overwrite:
        raise FileExistsError(f"{existing[0]} already exists; pass overwrite=true or another output_dir or seed.")
    pipeline = FusionFramesPipeline.from_pretrained(
        cfg.pipeline_dir, stage_dir(cfg.keyframes_dir, "keyframes"), stage_dir(cfg.interpolation_dir, "interpolation"),
        stage_dir(cfg.decoder_dir, "decoder")).to(device)
    result = pipeline([cfg.prompt] * cfg.num_videos, fps=cfg.fps, num_inference_steps=cfg.steps,
                      guidance_scale=cfg.guidance_scale, interpolation_steps=cfg.interpolation_steps,
                      interpolation_guidance=cfg.interpolation_guidance, seed=cfg.seed, decode_chunk=cfg.decode_chunk,
                      progress=cfg.progress, dtype=torch.bfloat16 if device.type == "cuda" else None)
    print(" | ".join(f"{stage}: {sec:.2f} s" for stage, sec in result["seconds"].items()))
    keyframe_frames = pipeline.codec.decode(result["keyframes"].float()).clamp(-1, 1)
    written: list[Path] = []
    for stem, video, keyframes in zip(stems, result["video"], keyframe_frames):
        written += save_video(to_uint8(video), out / stem, fps=round(pipeline.fps(cfg.fps)))
        written.append(save_image(image_grid(keyframes), out / f"{stem}_keyframes.png"))
    return written
