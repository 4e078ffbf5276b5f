"""FVDM's zero-shot tasks with a keyframe model (FVDM §2.4): per-frame timestep schedules over held frames.

One DDIM loop (``diffusion.per_frame.sample_per_frame``) serves every task; the tasks differ only in which
frames are given and held at timestep 0 while the others follow the sampler's clock t:

    text-to-video   [t, t, ..., t]          nothing given
    image-to-video  [0, t, ..., t]          the first frame
    interpolation   [0, t, ..., t, 0]       the first and the last frame
    extension       [0] * M + [t] * (F - M) the last M frames of the video so far (long video, clip by clip)

A model trained with vectorised timesteps (``model.timesteps=vectorized``) has seen frames at different noise
levels; a scalar-trained one runs the same schedules, out of its training distribution.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fusionframes.diffusion import NoiseSchedule
from fusionframes.diffusion.per_frame import sample_per_frame
from fusionframes.models.interpolation_unet import deinterleave, interleave
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.temporal import frame_positions, refine_positions
from fusionframes.pipeline import guided_denoiser

TASKS = ("t2v", "i2v", "interpolation", "extension")


def held_frames(task: str, batch: int, num_frames: int, overlap: int = 0,
                device: torch.device | str | None = None) -> Tensor:
    """Mask (B, F) bool of the frames a ``task`` (TASKS) holds at timestep 0; ``overlap`` M for extension."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not an FVDM task; use one of {TASKS}.")
    held = torch.zeros(batch, num_frames, dtype=torch.bool, device=device)
    if task == "i2v":
        held[:, 0] = True
    elif task == "interpolation":
        held[:, [0, -1]] = True
    elif task == "extension":
        if not 0 < overlap < num_frames:
            raise ValueError(f"overlap={overlap} must be in 1..{num_frames - 1} for {num_frames}-frame clips.")
        held[:, :overlap] = True
    return held


class FVDMSampler:
    """Per-frame-schedule sampling of a ``KeyframeUNet`` with classifier-free guidance.

    Text comes as ``context`` (2B, L, D) and ``mask`` (2B, L) (B prompts, then B empty prompts, as from
    ``text_encoder.encode(prompts + [""] * B)``); positions are (2B, F) on the source timeline.
    ``cond_frame_mode``: "replace" (given frames re-inserted after every step and returned exactly) or "free".
    """

    def __init__(self, model: KeyframeUNet, schedule: NoiseSchedule, num_inference_steps: int = 50,
                 guidance_scale: float = 5.0, cond_frame_mode: str = "replace", eta: float = 0.0) -> None:
        self.model = model
        self.schedule = schedule
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.cond_frame_mode = cond_frame_mode
        self.eta = eta

    def sample(self, context: Tensor, mask: Tensor, positions: Tensor, shape: tuple[int, ...],
               held: Tensor | None = None, given: Tensor | None = None, generator: torch.Generator | None = None,
               progress: bool = False) -> Tensor:
        """Latents of ``shape`` (B, F, C, h, w); frames ``held`` (B, F) are ``given`` (B, F, C, h, w)."""
        denoise = guided_denoiser(self.model, context, mask, positions, self.guidance_scale)
        return sample_per_frame(denoise, shape, self.schedule, self.num_inference_steps, held, given,
                                self.cond_frame_mode, self.eta, generator, progress=progress, desc="fvdm",
                                device=context.device, dtype=context.dtype)

    def task(self, task: str, context: Tensor, mask: Tensor, positions: Tensor, shape: tuple[int, ...],
             given: Tensor | None = None, overlap: int = 0, generator: torch.Generator | None = None,
             progress: bool = False) -> Tensor:
        """One clip of a ``task`` (TASKS): ``given`` (B, F, C, h, w) holds the given frames at their places."""
        held = held_frames(task, shape[0], shape[1], overlap, context.device)
        return self.sample(context, mask, positions, shape, held, given, generator, progress)

    def extend(self, video: Tensor, context: Tensor, mask: Tensor, num_clips: int, overlap: int,
               num_frames: int | None = None, stride: int = 12, generator: torch.Generator | None = None,
               progress: bool = False) -> Tensor:
        """Long video: ``num_clips`` clips of F frames (default: the model's), each starting from the last
        ``overlap`` M frames so far held at 0 -> (B, N + num_clips·(F - M), C, h, w) from ``video`` (B, N, ...)."""
        num_frames = num_frames or self.model.num_frames
        b = video.shape[0]
        positions = frame_positions(2 * b, num_frames, stride, video.device)
        for _ in range(num_clips):
            given = torch.zeros(b, num_frames, *video.shape[2:], device=video.device, dtype=video.dtype)
            given[:, :overlap] = video[:, -overlap:]
            clip = self.task("extension", context, mask, positions, tuple(given.shape), given, overlap, generator,
                             progress)
            video = torch.cat([video, clip[:, overlap:]], dim=1)
        return video

    def infill(self, keyframes: Tensor, positions: Tensor, context: Tensor, mask: Tensor, between: int = 3,
               keyframes_per_window: int = 4, generator: torch.Generator | None = None,
               progress: bool = False) -> Tensor:
        """``between`` frames between every pair of keyframes (B, T, C, h, w) at ``positions`` (B, T) ->
        (B, (T-1)·(between+1)+1, C, h, w), keyframes exactly kept.

        Windows of ``keyframes_per_window`` keyframes (neighbours share one) are sampled with every keyframe held
        at timestep 0: [0, t, t, t, 0] for two keyframes, the interpolation schedule; the in-between positions
        are spaced evenly between the keyframes' and each window's start at position 0, as in training.
        """
        b, num_keyframes = keyframes.shape[:2]
        if keyframes_per_window < 2:
            raise ValueError(f"keyframes_per_window must be >= 2, got {keyframes_per_window}.")
        step = between + 1
        starts = list(range(0, num_keyframes - 1, keyframes_per_window - 1))
        sizes = [min(keyframes_per_window, num_keyframes - start) for start in starts]
        groups: dict[int, Tensor] = {}
        cond, uncond = context.chunk(2)
        masks = None if mask is None else mask.chunk(2)
        for size in sorted(set(sizes)):  # windows of one size run as one batch
            batch = [start for start, n in zip(starts, sizes) if n == size]
            w = len(batch)
            window = torch.cat([keyframes[:, start: start + size] for start in batch])
            given = interleave(window, window.new_zeros(w * b, size - 1, between, *keyframes.shape[2:]))
            held = torch.zeros(w * b, given.shape[1], dtype=torch.bool, device=keyframes.device)
            held[:, ::step] = True
            frame_pos = refine_positions(torch.cat([positions[:, start: start + size] for start in batch]), step)
            frame_pos = (frame_pos - frame_pos[:, :1]).repeat(2, 1)
            text = torch.cat([cond.repeat(w, 1, 1), uncond.repeat(w, 1, 1)])
            text_mask = None if masks is None else torch.cat([masks[0].repeat(w, 1), masks[1].repeat(w, 1)])
            video = self.sample(text, text_mask, frame_pos, tuple(given.shape), held, given, generator, progress)
            groups.update(zip(batch, deinterleave(video, between)[1].chunk(w)))
        return interleave(keyframes, torch.cat([groups[start] for start in starts], dim=1))
