"""Text -> video evaluation (paper Table 1): sample videos for prompts, score them against real clips."""

from __future__ import annotations

import time

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from fusionframes.evaluation.data import prompt_list, take
from fusionframes.evaluation.metrics import VideoMetrics
from fusionframes.pipeline import FPS_MODES, FusionFramesPipeline


class TextToVideoEvaluation:
    """Samples ``num_videos`` videos at ``fps`` (keyframes | medium | high) and computes :class:`VideoMetrics`.

    Real clips (``real``, any dataset of the framework yielding ``video`` and ``caption``) are loaded and
    measured once; prompts are their captions (``prompts: dataset``), a list, or a text file. Videos are
    decoded by the pipeline's temporal decoder (``temporal_decoder: true``) or frame by frame by the image
    MoVQ, which isolates the keyframe model (Table 1).
    """

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        if cfg.fps not in FPS_MODES:
            raise ValueError(f"evaluation.fps={cfg.fps!r} is not a mode; choose one of {list(FPS_MODES)}.")
        self.cfg = cfg
        self.device = device
        real, captions = take(instantiate(cfg.real, _convert_="all"), cfg.num_videos)
        self.prompts = prompt_list(cfg.prompts, captions, cfg.num_videos)
        self.metrics = VideoMetrics(cfg.metrics, device)
        for chunk in real.split(cfg.batch_size):
            self.metrics.add_real(chunk.to(device))

    def __call__(self, pipeline: FusionFramesPipeline, seed: int, progress: bool = False) -> dict[str, float]:
        cfg = self.cfg
        if not cfg.temporal_decoder:
            pipeline.decoder = None
        dtype = torch.bfloat16 if self.device.type == "cuda" else None
        keyframe_every = 4 ** len(FPS_MODES[cfg.fps])
        self.metrics.reset()
        seconds = 0.0
        for start in range(0, cfg.num_videos, cfg.batch_size):
            prompts = self.prompts[start: start + cfg.batch_size]
            began = time.perf_counter()
            out = pipeline(prompts, fps=cfg.fps, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                           interpolation_steps=cfg.interpolation_steps,
                           interpolation_guidance=cfg.interpolation_guidance, seed=seed + start, progress=progress,
                           dtype=dtype)
            seconds += time.perf_counter() - began
            videos = out["video"]
            self.metrics.update(videos, prompts, keyframes=videos[:, ::keyframe_every])
        return {**self.metrics.compute(), "seconds_per_video": seconds / cfg.num_videos}
