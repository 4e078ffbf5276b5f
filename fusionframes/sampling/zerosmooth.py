"""ZeroSmooth (Yang et al., arXiv 2406.00908): a training-free frame-rate increase of a trained keyframe model.

Self-cascade (spec §2.2, §2.8): a short branch samples F keyframes; each long branch k samples s times the
frames of branch k - 1 with its keyframes at every s-th frame, with the same frozen model, in lock-step with
the others (one denoising step of every branch per sampler step). Inside the attention modules the long
branch's hidden states are tied to the previous branch's at the same step and module
(``zerosmooth_attention``), its temporal attention runs over sliding windows of the training length, frame
positions are refined between the keyframes' (``refine_positions``), and the keyframe frames share the
previous branch's noise. Two 2x stages give 4x. The equations lost from the paper's text are rebuilt in the
spec; each rebuilt choice is an option of ``ZeroSmoothConfig`` with the spec's default.

``keyframes`` turns the sampler into an interpolator of given keyframes: the short branch then replays
them along the forward process, z_t = alpha_t x_0 + sigma_t eps with the branch's initial noise eps, and the
long branches fill the frames between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor
from tqdm.auto import tqdm

from fusionframes.diffusion import NoiseSchedule
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.temporal import refine_positions
from fusionframes.pipeline import guided_denoiser
from fusionframes.sampling.frame_operators import FUSIONS, OPERATORS, FrameOperator, frame_operator, long_length
from fusionframes.sampling.zerosmooth_attention import (
    KV_CHOICES,
    MODULE_KINDS,
    CorrectionState,
    correction_hooks,
)
from fusionframes.utils.validation import check_guidance, check_probability

LAMBDA_SCHEDULES = ("linear", "constant", "cosine", "power")


@dataclass
class ZeroSmoothConfig:
    """ZeroSmooth options; defaults are the spec's (§5.3).

    scale: s per stage; num_stages: long branches (1 -> 2x, 2 -> 4x); layout: "paper" (s·F frames) or
    "inclusive" (s·(F-1)+1, FusionFrames' T -> 4T-3 layout); window/overlap: temporal attention windows (None:
    the model's training frame count and half of it); fusion: "pyramid" (FreeNoise) or "uniform";
    modules: attention kinds corrected; q_operator, kv_operators (A_1, A_2), temporal_operator: frame
    operators (``frame_operators.OPERATORS``); kv_choice: A_1 with probability p_a1 ("bernoulli") or when a
    standard normal draw exceeds threshold ("gaussian_threshold", the paper's literal wording);
    lambda_schedule: blend weight lambda_t of the corrected attention, "linear" t/T, "constant" lambda_value,
    "cosine" (1 - cos(pi t/T))/2 or "power" (t/T)^lambda_power; pass_corrected_states: branch k + 1 is tied to
    branch k's corrected states; share_keyframe_noise: keyframe frames take the previous branch's noise at
    every draw; adain_color: match each frame's per-channel latent statistics to the keyframes' after every
    step (optional colour correction); num_inference_steps, eta (DDIM), guidance_scale (classifier-free).
    """

    scale: int = 2
    num_stages: int = 2
    layout: str = "paper"
    window: int | None = None
    overlap: int | None = None
    fusion: str = "pyramid"
    modules: list[str] = field(default_factory=lambda: list(MODULE_KINDS))
    q_operator: str = "sample"
    kv_operators: list[str] = field(default_factory=lambda: ["interp_align_false", "interp_align_true"])
    kv_choice: str = "bernoulli"
    p_a1: float = 0.5
    threshold: float = 0.5
    temporal_operator: str = "sample"
    lambda_schedule: str = "linear"
    lambda_value: float = 1.0
    lambda_power: float = 1.0
    pass_corrected_states: bool = True
    share_keyframe_noise: bool = True
    adain_color: bool = False
    num_inference_steps: int = 50
    eta: float = 1.0
    guidance_scale: float = 5.0

    def __post_init__(self) -> None:
        if self.scale < 1 or self.num_stages < 0:
            raise ValueError(f"zerosmooth.scale must be >= 1 and num_stages >= 0, got {self.scale}, "
                             f"{self.num_stages}.")
        long_length(2, self.scale, self.layout)  # checks the layout
        if self.fusion not in FUSIONS:
            raise ValueError(f"zerosmooth.fusion={self.fusion!r} is not supported; use one of {FUSIONS}.")
        unknown = [m for m in self.modules if m not in MODULE_KINDS]
        if unknown:
            raise ValueError(f"zerosmooth.modules has {unknown}; allowed: {MODULE_KINDS}.")
        operators = [self.q_operator, *self.kv_operators, self.temporal_operator]
        if len(self.kv_operators) != 2 or any(op not in OPERATORS for op in operators):
            raise ValueError(f"zerosmooth operators must come from {OPERATORS}, with two kv_operators; got "
                             f"q={self.q_operator!r}, kv={list(self.kv_operators)}, "
                             f"temporal={self.temporal_operator!r}.")
        if self.kv_choice not in KV_CHOICES:
            raise ValueError(f"zerosmooth.kv_choice={self.kv_choice!r} is not supported; use one of {KV_CHOICES}.")
        check_probability("zerosmooth.p_a1", self.p_a1)
        check_probability("zerosmooth.lambda_value", self.lambda_value)
        if self.lambda_schedule not in LAMBDA_SCHEDULES:
            raise ValueError(f"zerosmooth.lambda_schedule={self.lambda_schedule!r} is not supported; use one of "
                             f"{LAMBDA_SCHEDULES}.")
        if self.lambda_power <= 0:
            raise ValueError(f"zerosmooth.lambda_power must be > 0, got {self.lambda_power}.")
        if self.eta < 0:
            raise ValueError(f"zerosmooth.eta must be >= 0, got {self.eta}.")
        check_guidance("zerosmooth.guidance_scale", self.guidance_scale)

    def correction_weight(self, t: int, num_train_timesteps: int) -> float:
        """lambda_t in [0, 1], non-increasing as denoising proceeds (t decreasing)."""
        x = t / num_train_timesteps
        if self.lambda_schedule == "constant":
            return self.lambda_value
        if self.lambda_schedule == "cosine":
            return 0.5 * (1.0 - math.cos(math.pi * x))
        return x ** self.lambda_power if self.lambda_schedule == "power" else x


def shared_noise(shapes: list[tuple[int, ...]], scale: int, share: bool, generator: torch.Generator | None,
                 device: torch.device, dtype: torch.dtype) -> list[Tensor]:
    """One standard normal tensor per branch shape (B, F_k, C, h, w); with ``share``, frames s·i of branch k
    are branch k - 1's frame i (spec Eq. 23)."""
    out: list[Tensor] = []
    for shape in shapes:
        eps = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if share and out:
            eps[:, : scale * out[-1].shape[1]: scale] = out[-1]
        out.append(eps)
    return out


def adain_to_keyframes(z: Tensor, reference: Tensor, scale: int, eps: float = 1e-6) -> Tensor:
    """z (B, F', C, h, w) with each frame's per-channel mean and std over (h, w) set to the keyframes'
    (reference (B, F, C, h, w), keyframe i at frame s·i), linearly interpolated between neighbouring keyframes."""
    num_keyframes = reference.shape[1]
    position = torch.arange(z.shape[1], device=z.device, dtype=torch.float64) / scale
    lo = position.floor().long().clamp(max=num_keyframes - 1)
    hi = (lo + 1).clamp(max=num_keyframes - 1)
    w = (position - lo).clamp(0, 1).to(z.dtype)[None, :, None, None, None]
    mean_ref, std_ref = reference.mean((-2, -1), keepdim=True), reference.std((-2, -1), keepdim=True)
    mean = mean_ref[:, lo] * (1 - w) + mean_ref[:, hi] * w
    std = std_ref[:, lo] * (1 - w) + std_ref[:, hi] * w
    return (z - z.mean((-2, -1), keepdim=True)) / (z.std((-2, -1), keepdim=True) + eps) * std + mean


class ZeroSmoothSampler:
    """Self-cascaded sampling of a frozen ``KeyframeUNet`` with hidden-state correction (no training)."""

    def __init__(self, model: KeyframeUNet, schedule: NoiseSchedule, config: ZeroSmoothConfig | None = None) -> None:
        self.model = model
        self.schedule = schedule
        self.config = config or ZeroSmoothConfig()

    def stage_frames(self, num_keyframes: int) -> list[int]:
        """Frames of the short branch and of each long branch, e.g. [16, 32, 64] (paper) or [16, 31, 61]."""
        frames = [num_keyframes]
        for _ in range(self.config.num_stages):
            frames.append(long_length(frames[-1], self.config.scale, self.config.layout))
        return frames

    def stage_positions(self, positions: Tensor) -> list[Tensor]:
        """Frame positions (B, F_k) of every branch from the keyframes' (B, F): refined s-fold each stage."""
        trailing = self.config.scale - 1 if self.config.layout == "paper" else 0
        out = [positions]
        for _ in range(self.config.num_stages):
            out.append(refine_positions(out[-1], self.config.scale, trailing))
        return out

    def operators(self, num_keyframes: int, num_frames: int) -> dict[str, FrameOperator]:
        cfg = self.config
        kinds = {"q": cfg.q_operator, "kv1": cfg.kv_operators[0], "kv2": cfg.kv_operators[1],
                 "temporal": cfg.temporal_operator}
        return {name: frame_operator(kind, num_keyframes, num_frames, cfg.scale) for name, kind in kinds.items()}

    @torch.no_grad()
    def __call__(self, context: Tensor, mask: Tensor, positions: Tensor, shape: tuple[int, ...],
                 keyframes: Tensor | None = None, generator: torch.Generator | None = None,
                 progress: bool = False) -> list[Tensor]:
        """Latents of every branch: [(B, F, C, h, w), (B, F_1, ...), ..., (B, F_S, ...)].

        ``context`` (2B, L, D), ``mask`` (2B, L): B prompts then B empty prompts; ``positions`` (2B, F): the
        keyframes' positions on the source timeline; ``shape`` (B, F, C, h, w); ``keyframes`` (B, F, C, h, w):
        given keyframe latents to interpolate (returned as the first item), else the short branch samples them.
        """
        cfg = self.config
        b, num_keyframes = shape[:2]
        if num_keyframes < 2:
            raise ValueError(f"ZeroSmooth needs at least 2 keyframes, got {num_keyframes}.")
        if keyframes is not None and tuple(keyframes.shape) != tuple(shape):
            raise ValueError(f"keyframes have shape {tuple(keyframes.shape)}; expected {tuple(shape)}.")
        device, dtype = context.device, context.dtype
        frames = self.stage_frames(num_keyframes)
        stage_positions = self.stage_positions(positions)
        shapes = [(b, n, *shape[2:]) for n in frames]
        noise = shared_noise(shapes, cfg.scale, cfg.share_keyframe_noise, generator, device, dtype)
        choice = torch.Generator(device=device).manual_seed(
            int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device if generator else None)))
        window = cfg.window or self.model.num_frames or num_keyframes
        state = CorrectionState(window=window, overlap=window // 2 if cfg.overlap is None else cfg.overlap,
                                fusion=cfg.fusion, modules=tuple(cfg.modules),
                                pass_corrected_states=cfg.pass_corrected_states, kv_choice=cfg.kv_choice,
                                p_a1=cfg.p_a1, threshold=cfg.threshold, generator=choice)
        denoisers = [guided_denoiser(self.model, context, mask, p, cfg.guidance_scale) for p in stage_positions]
        operators = [None] + [self.operators(frames[k - 1], frames[k]) for k in range(1, len(frames))]
        scheduler = self.schedule.scheduler("ddim")
        scheduler.set_timesteps(cfg.num_inference_steps, device=device)
        stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        z = [eps.clone() for eps in noise]
        with correction_hooks(self.model, state):
            for t in tqdm(scheduler.timesteps.tolist(), desc="zerosmooth", disable=not progress):
                t_batch = torch.full((b,), t, dtype=torch.long, device=device)
                step_noise = (shared_noise(shapes, cfg.scale, cfg.share_keyframe_noise, generator, device, dtype)
                              if cfg.eta > 0 else [None] * len(frames))
                state.lam = cfg.correction_weight(t, self.schedule.num_train_timesteps)
                state.bank_out = {}
                for k, num_frames in enumerate(frames):
                    if k == 0 and keyframes is not None:
                        z[0] = self.schedule.add_noise(keyframes, noise[0], t_batch)
                    state.mode, state.num_frames = ("correct" if k else "record"), num_frames
                    state.bank_in, state.bank_out, state.operators = state.bank_out, {}, operators[k] or {}
                    pred = denoisers[k](z[k], t_batch)
                    z[k] = scheduler.step(pred, t, z[k], eta=cfg.eta, variance_noise=step_noise[k]).prev_sample
                    if k == 0 and keyframes is not None:  # the replayed keyframes at the next step's level
                        z[0] = (keyframes if t < stride else
                                self.schedule.add_noise(keyframes, noise[0], t_batch - stride))
                    if cfg.adain_color and k:
                        z[k] = adain_to_keyframes(z[k], z[k - 1], cfg.scale)
                state.bank_in, state.bank_out = {}, {}
        return z
