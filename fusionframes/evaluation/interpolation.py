"""Interpolation quality against true frames and its speed (paper Table 2 and Figure 7, in miniature).

On the shapes world every intermediate frame is known, also between source frames (the world renders any
time), so the interpolator is scored directly: 16 true keyframes 12 source frames apart (2 fps) are
encoded, interpolated once (s=3: 61 frames, 3 source frames apart) and twice (s=3 then s=1: 241 frames,
0.75 source frames apart), decoded, and their in-between frames compared with the true ones.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from fusionframes.data.samplers import frames_to_tensor
from fusionframes.data.shapes import ShapesWorld
from fusionframes.metrics.reconstruction import VideoReconstructionMetrics, frame_lpips, in_between_frames, load_lpips
from fusionframes.metrics.shapes import ShapesGroundTruthScores
from fusionframes.models.interpolation_unet import num_frames
from fusionframes.pipeline import FusionFramesPipeline


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class InterpolationEvaluation:
    """PSNR / SSIM / MSE (/ LPIPS) of in-between frames after pass 1 and after both passes, direction accuracy
    and smoothness of the final video from its pixels, and seconds per video of each pass.

    ``cfg``: ``world`` (a ShapesWorld config), ``num_videos``, ``batch_size``, ``num_keyframes`` (16),
    ``keyframe_stride`` (12 source frames), ``skips`` ([3, 1]), ``steps``, ``guidance_scale``,
    ``temporal_decoder`` (decode with the pipeline's temporal decoder, or the image MoVQ to isolate the
    interpolator) and ``lpips_path`` (null: no LPIPS).
    """

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        if len(cfg.skips) < 1:
            raise ValueError("evaluation.skips needs at least one interpolation pass, e.g. [3, 1].")
        self.cfg = cfg
        self.device = device
        self.world: ShapesWorld = instantiate(cfg.world)
        self.scenes = [self.world.scene(i) for i in range(cfg.num_videos)]
        # Source-frame times of the keyframes and of the frames after each pass (4T - 3 per pass).
        self.times = [cfg.keyframe_stride * np.arange(cfg.num_keyframes, dtype=np.float64)]
        for _ in cfg.skips:
            self.times.append(np.linspace(0, self.times[-1][-1], num_frames(len(self.times[-1]))))
        if self.times[0][-1] >= self.world.num_frames:
            raise ValueError(f"{cfg.num_keyframes} keyframes {cfg.keyframe_stride} frames apart need "
                             f"evaluation.world.num_frames > {self.times[0][-1]:.0f}.")
        self.lpips = None if cfg.lpips_path is None else load_lpips(cfg.lpips_path, "evaluation.lpips_path").to(device)

    def _render(self, scenes: list, times: np.ndarray) -> torch.Tensor:
        return torch.stack([frames_to_tensor(self.world.render(s, times)) for s in scenes]).to(self.device)

    def __call__(self, pipeline: FusionFramesPipeline, seed: int, progress: bool = False) -> dict[str, float]:
        cfg = self.cfg
        dtype = torch.bfloat16 if self.device.type == "cuda" else None
        decode = pipeline.decode if cfg.temporal_decoder else pipeline.codec.decode
        passes = [VideoReconstructionMetrics(with_lpips=self.lpips is not None).to(self.device) for _ in cfg.skips]
        ground_truth = ShapesGroundTruthScores()
        seconds = [0.0] * len(cfg.skips)
        generator = torch.Generator(self.device).manual_seed(seed)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            if self.device.type == "cuda":  # kernels are selected and compiled on the first call: not timed
                warm = pipeline.codec.encode(self._render(self.scenes[:1], self.times[0]))
                pipeline.interpolation.interpolate(warm, cfg.skips[0], pipeline.interpolation_schedule, 1)
            for start in range(0, cfg.num_videos, cfg.batch_size):
                scenes = self.scenes[start: start + cfg.batch_size]
                latents = pipeline.codec.encode(self._render(scenes, self.times[0]))
                for i, (skip, metrics) in enumerate(zip(cfg.skips, passes)):
                    _synchronize(self.device)
                    began = time.perf_counter()
                    latents = pipeline.interpolation.interpolate(
                        latents, skip, pipeline.interpolation_schedule, cfg.steps, cfg.guidance_scale,
                        generator=generator, progress=progress)
                    _synchronize(self.device)
                    seconds[i] += time.perf_counter() - began
                    video = decode(latents).float().clamp(-1, 1)
                    truth = self._render(scenes, self.times[i + 1])
                    video_between, truth_between = in_between_frames(video), in_between_frames(truth)
                    scores = None if self.lpips is None else frame_lpips(self.lpips, video_between, truth_between)
                    metrics.update(video_between, truth_between, scores)
                ground_truth.update(video.cpu(), [s.caption() for s in scenes])
        values: dict[str, float] = {}
        for i, metrics in enumerate(passes, 1):
            computed = metrics.compute()
            values.update({f"{k}_pass{i}": float(computed[k]) for k in ("psnr", "ssim", "mse", "lpips")
                           if k in computed})
            values[f"seconds_pass{i}"] = sum(seconds[:i]) / cfg.num_videos
        final = ground_truth.compute()
        values.update({"direction_accuracy": float(final["direction_accuracy"]),
                       "smoothness": float(final["smoothness"])})
        return values
