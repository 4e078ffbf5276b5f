"""Text -> video inference: the FusionFrames pipeline used by ``sample.py`` and by validation.

    prompt -> text encoder -> keyframes (CFG) -> interpolation s=3 -> interpolation s=1 -> temporal decoder

Directory layout written by :meth:`FusionFramesPipeline.save_pretrained` (each stage loads on its own too)::

    model_index.json   resolution, frame stride, source fps and which stages are present
    movq/              image MoVQ (diffusers VQModel): latent space and frozen encoder
    t2i/               frozen T2I backbone: unet/, text_encoder/, scheduler/
    keyframes/         temporal weights of the keyframe model (KeyframeUNet)
    interpolation/     latent interpolator (InterpolationUNet) and its v-prediction scheduler/
    decoder/           temporal MoVQ decoder (optional: without it the image MoVQ decodes frame by frame)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler
from tqdm.auto import tqdm

from fusionframes.diffusion import NoiseSchedule, classifier_free_guidance, sample
from fusionframes.models.interpolation_unet import InterpolationUNet
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.latents import LatentCodec
from fusionframes.models.t2i import TextToImageModel
from fusionframes.models.temporal import frame_positions
from fusionframes.models.temporal_decoder import TemporalMoVQDecoder
from fusionframes.utils.pretrained import loading, require_dir
from fusionframes.utils.validation import check_guidance, check_int, check_seed

# Frame-rate modes: how many interpolation passes, and the skip s of each (paper §5: s=3, then s=1).
FPS_MODES = {"keyframes": (), "medium": (3,), "high": (3, 1)}
#: Networks ``FusionFramesPipeline.compile`` can compile (attribute names).
COMPILE_STAGES = ("keyframes", "interpolation", "decoder")


def guided_denoiser(model: KeyframeUNet, context: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                    guidance_scale: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``denoise(z_t (B, F, C, h, w), t (B,) or (B, F))`` with classifier-free guidance in one batched UNet call.

    ``context`` (2B, L, D) and ``mask`` (2B, L) hold the B prompts then B empty prompts; ``positions`` (2B, F).
    """

    def denoise(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond, uncond = model(torch.cat([z_t, z_t]), torch.cat([t, t]), context, mask, positions,
                             any_length=True).chunk(2)
        return classifier_free_guidance(cond, uncond, guidance_scale)

    return denoise


def check_sampling_args(fps: str, num_inference_steps: int, guidance_scale: float, interpolation_steps: int,
                        interpolation_guidance: float, seed: int | None, decode_chunk: int,
                        max_steps: int | None = None, max_interpolation_steps: int | None = None,
                        names: Mapping[str, str] | None = None) -> None:
    """One clear error for the first invalid sampling argument, before any network runs (and, with no
    ``max_*steps``, before any weights load); ``names`` maps an argument to the key a user set it by."""
    key = (names or {}).get
    if not isinstance(fps, str) or fps not in FPS_MODES:
        raise ValueError(f"{key('fps', 'fps')}={fps!r} is not a mode; choose one of {list(FPS_MODES)}.")
    check_int(key("num_inference_steps", "num_inference_steps"), num_inference_steps, 1, max_steps)
    check_guidance(key("guidance_scale", "guidance_scale"), guidance_scale)
    check_int(key("interpolation_steps", "interpolation_steps"), interpolation_steps, 1, max_interpolation_steps)
    check_guidance(key("interpolation_guidance", "interpolation_guidance"), interpolation_guidance)
    check_seed(key("seed", "seed"), seed)
    check_int(key("decode_chunk", "decode_chunk"), decode_chunk, 1)


@torch.no_grad()
def generate_keyframes(model: KeyframeUNet, schedule: NoiseSchedule, context: torch.Tensor, mask: torch.Tensor,
                       positions: torch.Tensor, shape: tuple[int, ...], num_inference_steps: int,
                       guidance_scale: float, generator: torch.Generator | None = None,
                       progress: bool = False, cuda_graph: bool = False) -> torch.Tensor:
    """Keyframe latents of ``shape`` (B, F, C, h, w) with classifier-free guidance.

    ``context`` (2B, L, D) and ``mask`` (2B, L) hold the B prompts then B empty prompts; ``positions`` (2B, F).
    Both branches run in one batched UNet call per step; ``cuda_graph``: on CUDA, that call is captured at the
    second step and replayed for the others.
    """
    return sample(guided_denoiser(model, context, mask, positions, guidance_scale), shape, schedule,
                  num_inference_steps, generator=generator, progress=progress, desc="keyframes",
                  device=context.device, dtype=context.dtype, cuda_graph=cuda_graph)


class _StageTimer:
    """Wall-clock seconds per stage (synchronising CUDA so GPU work is attributed to its stage)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seconds[stage] = now - self._last
        self._last = now


class FusionFramesPipeline:
    """All stages of text-to-video generation, loaded from one directory (see the module docstring)."""

    def __init__(self, t2i: TextToImageModel, keyframes: KeyframeUNet, interpolation: InterpolationUNet,
                 interpolation_schedule: NoiseSchedule, codec: LatentCodec,
                 decoder: TemporalMoVQDecoder | None = None, resolution: int = 64, frame_stride: int = 12,
                 source_fps: int = 24) -> None:
        self.t2i = t2i
        self.keyframes = keyframes
        self.interpolation = interpolation
        self.interpolation_schedule = interpolation_schedule
        self.codec = codec
        self.decoder = decoder
        self.resolution = resolution
        self.frame_stride = frame_stride
        self.source_fps = source_fps

    # ----------------------------------------------------------------------------------------------- i/o
    @classmethod
    def from_pretrained(cls, directory: str | Path, keyframes_dir: str | Path | None = None,
                        interpolation_dir: str | Path | None = None, decoder_dir: str | Path | None = None,
                        config_key: str = "pipeline_dir") -> FusionFramesPipeline:
        """Load every stage from ``directory``; the ``*_dir`` arguments replace single stages (export dirs)."""
        root = require_dir(directory, config_key)
        index_path = root / "model_index.json"
        if not index_path.exists():
            raise FileNotFoundError(f"{config_key}={root} has no model_index.json; it is not a pipeline directory.")
        with loading(config_key, index_path):
            index = json.loads(index_path.read_text())
            sizes = [check_int(f"{index_path}: {name}", index[name], 1)
                     for name in ("resolution", "frame_stride", "source_fps")]
        with loading(config_key, root / "t2i"):
            t2i = TextToImageModel.from_pretrained(root / "t2i", config_key)
        with loading("keyframes_dir", keyframes_dir or root / "keyframes"):
            keyframes = KeyframeUNet.from_pretrained(keyframes_dir or root / "keyframes", t2i.unet,
                                                     config_key="keyframes_dir")
        interp_root = require_dir(interpolation_dir or root / "interpolation", "interpolation_dir")
        with loading("interpolation_dir", interp_root):
            interpolation = InterpolationUNet.from_pretrained(interp_root, config_key="interpolation_dir")
            schedule = NoiseSchedule.from_scheduler_config(
                dict(DDIMScheduler.load_config(require_dir(interp_root / "scheduler", "interpolation_dir"))))
        decoder_root = decoder_dir or (root / "decoder" if (root / "decoder").exists() else None)
        with loading("decoder_dir", decoder_root):
            decoder = None if decoder_root is None else TemporalMoVQDecoder.from_pretrained(decoder_root, "decoder_dir")
        with loading(config_key, root / "movq"):
            codec = LatentCodec.from_pretrained(root / "movq", config_key)
        return cls(t2i, keyframes, interpolation, schedule, codec, decoder, *sizes)

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write every stage (fp16 safetensors + configs) and ``model_index.json`` under ``directory``."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        self.codec.save_pretrained(root / "movq", dtype)
        self.t2i.save_pretrained(root / "t2i", dtype)
        self.keyframes.save_pretrained(root / "keyframes", dtype)
        self.interpolation.save_pretrained(root / "interpolation", dtype)
        self.interpolation_schedule.scheduler("ddim").save_pretrained(root / "interpolation" / "scheduler")
        if self.decoder is not None:
            self.decoder.save_pretrained(root / "decoder", dtype)
        index = {"_class_name": type(self).__name__, "resolution": self.resolution,
                 "frame_stride": self.frame_stride, "source_fps": self.source_fps,
                 "stages": ["movq", "t2i", "keyframes", "interpolation"] + (["decoder"] if self.decoder else [])}
        (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        return root

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> FusionFramesPipeline:
        """Move every stage to ``device``. ``dtype`` (e.g. torch.bfloat16) also casts the networks' weights, as
        diffusers' ``torch_dtype`` does: sampling with ``dtype=None`` then runs wholly in it, norms and all,
        without autocast's per-call weight casts and float32 norms. The noise schedules stay float32."""
        networks = (self.t2i.unet, self.t2i.text_encoder, self.keyframes, self.interpolation, self.codec,
                    self.decoder)
        for module in networks:
            if module is not None:
                module.to(device, dtype).eval()
        self.t2i.to(device)
        self.interpolation_schedule.to(device)
        return self

    def compile(self, stages: Sequence[str] = COMPILE_STAGES, **kwargs: Any) -> FusionFramesPipeline:
        """``torch.compile`` networks in place (``nn.Module.compile``): ``stages`` among the keyframe model, the
        interpolator and the temporal decoder (all by default); ``kwargs`` go to ``torch.compile``
        (``mode="max-autotune"``, ...). The first call of each input shape compiles; sampling results are
        unchanged up to kernel rounding."""
        unknown = sorted(set(stages) - set(COMPILE_STAGES))
        if unknown:
            raise ValueError(f"compile stages {unknown} are unknown; choose among {list(COMPILE_STAGES)}.")
        for name in stages:
            module = getattr(self, name)
            if module is not None:
                module.compile(**kwargs)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.keyframes.parameters()).device

    # ----------------------------------------------------------------------------------------- sampling
    def fps(self, mode: str) -> float:
        """Frames per second of the output of an fps ``mode`` (2 for keyframes, 8 medium, 24 high)."""
        passes = FPS_MODES[mode]
        return self.source_fps / (passes[-1] if passes else self.frame_stride)

    def encode_prompt(self, prompts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text(s) -> ``context`` (2B, L, D) and ``mask`` (2B, L): the B prompts, then B empty prompts (the
        unconditional branch). Malformed prompts (not text, empty, unknown words, too long) are clear errors."""
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not isinstance(prompts, Sequence) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompt must be a text or a list of texts, got {prompts!r}.")
        if not prompts or any(not p.strip() for p in prompts):
            raise ValueError("prompt is empty; give a text such as 'a red circle moving right'.")
        return self.t2i.text_encoder.encode([*prompts, *[""] * len(prompts)])

    @torch.no_grad()
    def __call__(self, prompts: str | list[str], fps: str = "high", num_inference_steps: int = 50,
                 guidance_scale: float = 5.0, interpolation_steps: int = 10, interpolation_guidance: float = 0.25,
                 seed: int | None = 0, decode_chunk: int = 16, progress: bool = True,
                 dtype: torch.dtype | None = None, cuda_graphs: bool = False) -> dict[str, torch.Tensor]:
        """Generate one video per prompt.

        Returns ``keyframes`` (B, F, C, h, w) and ``latents`` (B, N, C, h, w) latents, ``video``
        (B, N, 3, H, W) in [-1, 1], N = F, 4F-3 or 16F-15 for ``fps`` keyframes / medium / high, and
        ``seconds``: wall-clock time per stage.
        ``dtype`` (e.g. torch.bfloat16 on GPUs) runs the networks under autocast; without it they run in their
        weights' dtype (see :meth:`to`). ``cuda_graphs``: on CUDA, replay the fixed-shape UNet calls of the keyframe
        stage and of the interpolation passes as CUDA graphs (ignored on CPU).
        """
        check_sampling_args(fps, num_inference_steps, guidance_scale, interpolation_steps, interpolation_guidance,
                            seed, decode_chunk, self.t2i.schedule.num_train_timesteps,
                            self.interpolation_schedule.num_train_timesteps)
        device = self.device
        generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
        passes = FPS_MODES[fps]
        stages = tqdm(total=2 + len(passes), desc="stages", disable=not progress)
        timer = _StageTimer(device)
        with autocast:
            context, mask = self.encode_prompt(prompts)
            n = len(context) // 2
            num_frames = self.keyframes.num_frames
            size = self.resolution // self.codec.factor
            positions = frame_positions(2 * n, num_frames, self.frame_stride, device)
            keyframes = generate_keyframes(self.keyframes, self.t2i.schedule, context, mask, positions,
                                           (n, num_frames, self.codec.channels, size, size), num_inference_steps,
                                           guidance_scale, generator, progress, cuda_graphs)
            timer.lap("keyframes")
            stages.update()
            latents = keyframes
            for i, skip in enumerate(passes, 1):
                latents = self.interpolation.interpolate(latents, skip, self.interpolation_schedule,
                                                         interpolation_steps, interpolation_guidance,
                                                         generator=generator, progress=progress,
                                                         cuda_graph=cuda_graphs)
                timer.lap(f"interpolation pass {i} (s={skip})")
                stages.update()
            video = self.decode(latents, decode_chunk)
            timer.lap("decoding")
            stages.update()
        stages.close()
        return {"keyframes": keyframes, "latents": latents, "video": video.float().clamp(-1, 1),
                "seconds": timer.seconds}

    def decode(self, latents: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """Latents (B, N, C, h, w) -> frames (B, N, 3, H, W): the temporal decoder in overlapping chunks, or
        the image MoVQ frame by frame when the pipeline has no temporal decoder."""
        if self.decoder is None:
            return self.codec.decode(latents)
        return self.decoder.decode_chunked(latents / self.codec.scale, chunk=chunk, overlap=min(2, chunk - 1))
