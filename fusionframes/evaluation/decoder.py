"""Video decoder evaluation (paper Table 3): reconstruction of real clips against the frozen image decoder."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from fusionframes.evaluation.data import take
from fusionframes.metrics.reconstruction import VideoReconstructionMetrics, frame_lpips, load_lpips
from fusionframes.pipeline import FusionFramesPipeline

ORDER = ("psnr", "ssim", "mse", "lpips", "temporal_error")


class DecoderEvaluation:
    """PSNR, SSIM, MSE, temporal error (and LPIPS) of the pipeline's temporal decoder and, as ``*_image_decoder``,
    of the image MoVQ frame by frame, on ``num_videos`` clips of ``real`` (8 consecutive frames by default),
    both from the same unquantised latents; plus the decoder's parameter counts.
    """

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.clips, _ = take(instantiate(cfg.real, _convert_="all"), cfg.num_videos)
        self.lpips = None if cfg.lpips_path is None else load_lpips(cfg.lpips_path, "evaluation.lpips_path").to(device)

    def __call__(self, pipeline: FusionFramesPipeline, seed: int, progress: bool = False) -> dict[str, float]:
        if pipeline.decoder is None:
            raise ValueError("the pipeline has no temporal decoder to evaluate; set decoder_dir or runs.")
        codec, decoder = pipeline.codec, pipeline.decoder
        results = {suffix: VideoReconstructionMetrics(self.lpips is not None).to(self.device)
                   for suffix in ("", "_image_decoder")}
        dtype = torch.bfloat16 if self.device.type == "cuda" else None
        for clips in self.clips.split(self.cfg.batch_size):
            video = clips.to(self.device)
            with torch.no_grad(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                z = codec.encode(video)
                outputs = {"": decoder.decode(z / codec.scale), "_image_decoder": codec.decode(z)}
                for suffix, rec in outputs.items():
                    rec = rec.float().clamp(-1, 1)
                    scores = None if self.lpips is None else frame_lpips(self.lpips, rec, video)
                    results[suffix].update(rec, video, scores)
        values = {}
        for suffix, metrics in results.items():
            computed = metrics.compute()
            values.update({f"{k}{suffix}": float(computed[k]) for k in ORDER if k in computed})
        counts = decoder.parameter_counts()
        return {**values, "params_new": float(counts["new"]), "params_total": float(counts["total"])}
