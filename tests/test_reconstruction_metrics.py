"""Video reconstruction metrics give the same values inside bf16 autocast as in fp32."""

from __future__ import annotations

import torch

from fusionframes.metrics.reconstruction import VideoReconstructionMetrics


def test_metrics_are_computed_in_fp32_under_autocast():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 4, 3, 32, 32, generator=generator) * 2 - 1
    preds = (target + 0.05 * torch.randn(target.shape, generator=generator)).clamp(-1, 1)
    plain, autocast = VideoReconstructionMetrics(), VideoReconstructionMetrics()
    plain.update(preds, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast.update(preds, target)
    expected, got = plain.compute(), autocast.compute()
    assert expected["ssim"] > 0.5  # a mildly noisy copy is structurally similar
    for name, value in expected.items():
        assert torch.allclose(got[name], value, rtol=1e-5), name
