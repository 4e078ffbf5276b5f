"""FVD, IS, CLIPSIM, in-between PSNR and the shapes-world score metrics, with tiny local stand-ins for the
detectors (TorchScript files and a transformers CLIP directory written to tmp paths; nothing is downloaded)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from fusionframes.data.samplers import frames_to_tensor
from fusionframes.data.shapes import ShapesWorld
from fusionframes.metrics.clipsim import CLIPSIM
from fusionframes.metrics.detectors import load_clip, load_video_classifier, load_video_features
from fusionframes.metrics.fvd import FrechetVideoDistance
from fusionframes.metrics.inception_score import VideoInceptionScore
from fusionframes.metrics.reconstruction import InBetweenPSNR, frame_lpips
from fusionframes.metrics.shapes import ShapesClassifierAccuracy, ShapesGroundTruthScores, caption_attributes
from fusionframes.models.shapes_classifier import ATTRIBUTE_CLASSES


class FeatureRows(nn.Module):
    """Detector stand-in whose features are planted in the videos: row ``videos[:, 0, 0, 0, :dim]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return videos[:, 0, 0, 0, : self.num_features]


def gaussian_sample(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n points (n, d) whose sample mean and unbiased sample covariance are exactly ``mean`` and ``cov``."""
    z = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / (n - 1))).T  # whitened: z.T z / (n-1) = I
    return mean + z @ torch.linalg.cholesky(cov).T


def as_videos(features: torch.Tensor) -> torch.Tensor:
    videos = torch.zeros(features.shape[0], 16, 3, 1, features.shape[1], dtype=torch.float64)
    videos[:, 0, 0, 0] = features
    return videos


def fvd_of(real: torch.Tensor, fake: torch.Tensor) -> float:
    metric = FrechetVideoDistance(FeatureRows(real.shape[1])).double()
    metric.update(as_videos(real), real=True)
    metric.update(as_videos(fake), real=False)
    return float(metric.compute())


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    """Commuting covariances: d = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2."""
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    a, b = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64), torch.tensor([4.0, 1.0, 9.0], dtype=torch.float64)
    expected = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())  # 5 + 1 + 1 = 7
    got = fvd_of(gaussian_sample(mu1, torch.diag(a), 64, 0), gaussian_sample(mu2, torch.diag(b), 64, 1))
    assert got == pytest.approx(expected, rel=1e-6) and expected == pytest.approx(7.0)


def test_frechet_distance_matches_closed_form_for_correlated_gaussians():
    """2-D: Tr((S1 S2)^1/2) = sqrt(Tr(S1 S2) + 2 sqrt(det S1 det S2)) for non-commuting S1, S2."""
    mu1, mu2 = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([-0.5, 2.0], dtype=torch.float64)
    s1 = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[1.0, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    cross = math.sqrt(float(torch.trace(s1 @ s2)) + 2 * math.sqrt(float(torch.det(s1) * torch.det(s2))))
    expected = float((mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2)) - 2 * cross
    got = fvd_of(gaussian_sample(mu1, s1, 50, 2), gaussian_sample(mu2, s2, 80, 3))
    assert got == pytest.approx(expected, rel=1e-6)
    assert fvd_of(gaussian_sample(mu1, s1, 50, 2), gaussian_sample(mu1, s1, 40, 4)) == pytest.approx(0.0, abs=1e-8)


class TinyI3D(nn.Module):
    """StyleGAN-V I3D stand-in: uint8 clips (B, 3, T=16, H, W) -> 400 features, refusing anything else."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("projection", torch.randn(48, 400, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        assert x.dtype == torch.uint8 and rescale and resize and return_features
        per_frame = (x.float() / 127.5 - 1).mean(dim=(3, 4))  # (B, 3, T)
        return per_frame.flatten(1) @ self.projection


class TinyInception(nn.Module):
    """StyleGAN Inception stand-in: uint8 frames (N, 3, H, W) -> probabilities over 8 classes (red level)."""

    def forward(self, x: torch.Tensor, no_output_bias: bool = False) -> torch.Tensor:
        assert x.dtype == torch.uint8 and x.ndim == 4 and no_output_bias
        level = (x[:, 0].float().mean(dim=(1, 2)) / 32).floor().clamp(0, 7).long()
        return torch.nn.functional.one_hot(level, 8).float() * 0.99 + 0.01 / 8


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    root = tmp_path_factory.mktemp("detectors")
    torch.jit.script(TinyI3D()).save(str(root / "i3d_torchscript.pt"))
    torch.jit.script(TinyInception()).save(str(root / "inception-2015-12-05.pt"))
    return root


def test_fvd_with_a_torchscript_i3d_from_a_local_path(scripted):
    metric = FrechetVideoDistance(load_video_features(scripted / "i3d_torchscript.pt", "metrics.fvd"))
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(24, 20, 3, 8, 8, generator=generator) * 2 - 1  # 20 frames: the first 16 count
    metric.update(real, real=True)
    metric.update(real.clone(), real=False)
    assert float(metric.compute()) == pytest.approx(0.0, abs=1e-3)
    metric.reset()
    metric.update(real, real=True)
    metric.update((real + 0.5).clamp(-1, 1), real=False)
    assert float(metric.compute()) > 1.0
    with pytest.raises(ValueError, match="first 16 frames"):
        metric.update(real[:, :8], real=False)


def test_inception_score_on_first_16_frames_with_a_torchscript_inception(scripted):
    metric = VideoInceptionScore(load_video_classifier(scripted / "inception-2015-12-05.pt", "metrics.is"), splits=1)
    # Frame k of video b is uniformly red level (b*16 + k) mod 8 -> every class equally often, each sure.
    level = (torch.arange(4)[:, None] * 16 + torch.arange(16)[None]) % 8
    videos = torch.full((4, 16, 3, 4, 4), -1.0)
    videos[:, :, 0] = ((level * 32 + 16) / 127.5 - 1)[..., None, None]
    extra = torch.full((4, 4, 3, 4, 4), -1.0)  # frames after the 16th are ignored (all class 0)
    metric.update(torch.cat([videos, extra], dim=1))
    score, _ = metric.compute()
    sure, unsure = 0.99 + 0.01 / 8, 0.01 / 8  # the stand-in's probabilities; p(y) is uniform
    expected = math.exp(sure * math.log(8 * sure) + 7 * unsure * math.log(8 * unsure))  # 7.48, at most 8
    assert len(metric.features[0]) == 64 and float(score) == pytest.approx(expected, rel=1e-5)
    same = VideoInceptionScore(load_video_classifier(scripted / "inception-2015-12-05.pt", "metrics.is"), splits=1)
    same.update(torch.full((4, 16, 3, 4, 4), -1.0))
    assert float(same.compute()[0]) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("loader", [load_video_features, load_video_classifier])
def test_missing_detector_weights_name_the_config_key(loader, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"evaluation\.metrics\.fvd_detector is not set"):
        loader(None, "evaluation.metrics.fvd_detector")
    with pytest.raises(FileNotFoundError, match=r"evaluation\.metrics\.is_classifier=.*nope\.pt is not a file"):
        loader(tmp_path / "nope.pt", "evaluation.metrics.is_classifier")
    with pytest.raises(FileNotFoundError, match=r"evaluation\.metrics\.x=.* has no config\.json"):
        loader(tmp_path, "evaluation.metrics.x")


def _tiny_clip_dir(root):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", *letters, *(f"{c}</w>" for c in letters)])}
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"))
    processor = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
                              tokenizer)
    torch.manual_seed(0)
    config = CLIPConfig(text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32,
                                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32},
                        vision_config={"image_size": 16, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
                                       "num_hidden_layers": 1, "num_attention_heads": 2},
                        projection_dim=8)
    CLIPModel(config).save_pretrained(root / "clip")
    processor.save_pretrained(root / "clip")
    return root / "clip"


def test_clipsim_is_the_mean_frame_text_cosine_of_a_local_clip(tmp_path):
    clip_dir = _tiny_clip_dir(tmp_path)
    generator = torch.Generator().manual_seed(0)
    videos = torch.rand(2, 3, 3, 16, 16, generator=generator) * 2 - 1
    prompts = ["a red circle", "a blue square"]
    metric = CLIPSIM(str(clip_dir))
    metric.update(videos, prompts)
    model, processor = load_clip(clip_dir, "metrics.clipsim.clip_path")
    frames = ((videos.reshape(6, 3, 16, 16) * 127.5 + 128).clamp(0, 255).to(torch.uint8))
    with torch.no_grad():
        image = model.get_image_features(processor(images=list(frames), return_tensors="pt")["pixel_values"])
        text = model.get_text_features(**processor(text=[p for p in prompts for _ in range(3)], return_tensors="pt",
                                                   padding=True))
    expected = torch.nn.functional.cosine_similarity(image, text).mean().clamp_min(0)
    assert float(metric.compute()) == pytest.approx(float(expected), abs=1e-5)
    with pytest.raises(FileNotFoundError, match=r"metrics\.clipsim\.clip_path=.* does not exist"):
        CLIPSIM(str(tmp_path / "missing"))


def test_in_between_psnr_leaves_keyframes_out():
    truth = torch.zeros(1, 9, 3, 4, 4)
    preds = torch.full_like(truth, 0.2)  # in [0, 1] pixels an error of 0.1: PSNR 20 dB
    preds[:, ::4] = 1.0  # keyframes wildly wrong, but not scored
    metric = InBetweenPSNR()
    metric.update(preds, truth)
    assert float(metric.compute()) == pytest.approx(20.0, abs=1e-4)


WORLD = ShapesWorld(resolution=64, num_frames=400, seed=3)


def _true_videos(count: int) -> tuple[torch.Tensor, list[str]]:
    scenes = [s for s in map(WORLD.scene, range(80)) if s.speed == "quickly" and s.growth == 0][:count]
    videos = torch.stack([frames_to_tensor(WORLD.render(s, range(0, 181, 12))) for s in scenes])
    return videos, [s.caption() for s in scenes]


def test_shapes_ground_truth_scores_recover_the_prompts_of_true_videos():
    videos, captions = _true_videos(4)
    metric = ShapesGroundTruthScores()
    metric.update(videos, captions)
    scores = metric.compute()
    assert float(scores["colour_accuracy"]) == 1.0 and float(scores["direction_accuracy"]) == 1.0
    assert float(scores["detected"]) == 1.0 and float(scores["smoothness"]) < 0.5  # shuffled frames: > 0.5
    wrong = [c.replace(caption_attributes(c)["colour"], "cyan" if "cyan" not in c else "red") for c in captions]
    metric.reset()
    metric.update(videos, wrong)
    assert float(metric.compute()["colour_accuracy"]) == 0.0


def test_caption_parsing_and_its_error():
    assert caption_attributes("A green triangle shrinking quickly on a grey background") == {
        "colour": "green", "shape": "triangle", "motion": "shrinking", "speed": "quickly", "background": "grey"}
    with pytest.raises(ValueError, match="'a panda making latte art' is not a shapes-world caption"):
        caption_attributes("a panda making latte art")


class Oracle(nn.Module):
    """A classifier stand-in that predicts given attribute values for every video."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__()
        self.values = values

    def logits(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, classes in ATTRIBUTE_CLASSES.items():
            logits = torch.zeros(videos.shape[0], len(classes))
            logits[:, classes.index(self.values[name])] = 1.0
            out[name] = logits
        return out


def test_classifier_accuracy_counts_each_attribute_the_prompt_names():
    videos = torch.zeros(2, 4, 3, 8, 8)
    oracle = Oracle({"colour": "red", "shape": "circle", "motion": "left", "background": "black", "speed": "slowly"})
    metric = ShapesClassifierAccuracy(oracle)
    metric.update(videos, ["a red circle moving left quickly on a black background", "a red square moving left"])
    values = {k: float(v) for k, v in metric.compute().items()}
    assert values == {"colour": 1.0, "shape": 0.5, "motion": 1.0, "background": 1.0, "speed": 0.0, "all": 0.5}


def test_fvd_is_the_same_under_bf16_autocast(scripted):
    real, fake = (torch.rand(8, 16, 3, 8, 8, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in (1, 2))
    values = []
    for autocast in (False, True):
        metric = FrechetVideoDistance(load_video_features(scripted / "i3d_torchscript.pt", "metrics.fvd"))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            metric.update(real, real=True)
            metric.update(fake, real=False)
        values.append(float(metric.compute()))
    assert values[0] == pytest.approx(values[1], rel=1e-6) and np.isfinite(values[0])


def test_frame_lpips_scores_every_frame_of_every_video():
    class MeanAbs(nn.Module):  # stands in for LPIPS' network: one score (N, 1, 1, 1) per image pair
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)

    lpips = nn.Module()
    lpips.net = MeanAbs()
    preds, target = torch.zeros(2, 3, 3, 4, 4), torch.zeros(2, 3, 3, 4, 4)
    preds[1, 2] = 0.5  # only the last frame of the second video differs
    assert frame_lpips(lpips, preds, target).tolist() == [0, 0, 0, 0, 0, 0.5]
