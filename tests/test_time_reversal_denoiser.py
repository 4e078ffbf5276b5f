"""The EDM view of the FVDM image-to-video model that the time-reversal samplers (GI, TRF, ViBiD, MPD) share."""

from __future__ import annotations

import pytest
import torch

from fusionframes.diffusion import NoiseSchedule
from fusionframes.diffusion.per_frame import sample_per_frame
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.temporal import frame_positions
from fusionframes.pipeline import guided_denoiser
from fusionframes.sampling.fvdm import held_frames
from fusionframes.sampling.time_reversal.base import guide
from fusionframes.sampling.time_reversal.denoiser import I2VDenoiser, sigma_schedule
from tests.test_keyframe_unet import BACKBONES, SIZE, TEXT_DIM, B, F, L, perturb


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_edm_euler_with_the_i2v_denoiser_is_fvdm_image_to_video_ddim(prediction_type):
    model = perturb(KeyframeUNet(BACKBONES["unet2d"]())).double()
    schedule = NoiseSchedule(prediction_type=prediction_type).double()
    g = torch.Generator().manual_seed(0)
    context = torch.randn(2 * B, L, TEXT_DIM, generator=g, dtype=torch.float64)
    positions = frame_positions(B, F)
    shape = (B, F, 4, SIZE, SIZE)
    given = torch.randn(shape, generator=g, dtype=torch.float64)
    x_T = torch.randn(shape, generator=g, dtype=torch.float64)
    scale = 3.0

    reference = sample_per_frame(guided_denoiser(model, context, None, positions.repeat(2, 1), scale), shape,
                                 schedule, 6, held_frames("i2v", B, F), given, x_T=x_T, progress=False)

    denoiser = I2VDenoiser(model, schedule, context, None, positions)
    timesteps, sigmas = sigma_schedule(schedule, 6)
    x = x_T * (1 + sigmas[0] ** 2) ** 0.5  # the VP sample x_T in the EDM view
    for i, t in enumerate(timesteps.tolist()):
        x0 = guide(*denoiser.pair(x, t, given[:, 0]), scale)
        x = x0 + (sigmas[i + 1] / sigmas[i]) * (x - x0)
    # The reference DDIM step reads diffusers' float32 alphas_cumprod, hence float32-level agreement.
    torch.testing.assert_close(x, reference, atol=1e-5, rtol=1e-4)


def test_sigma_schedule_rejects_zero_terminal_snr_and_bad_step_counts():
    timesteps, sigmas = sigma_schedule(NoiseSchedule(), 10)
    assert timesteps.shape == (10,) and sigmas.shape == (11,) and sigmas[-1] == 0
    assert (sigmas[:-1].diff() < 0).all()
    with pytest.raises(ValueError, match="zero_terminal_snr=True"):
        sigma_schedule(NoiseSchedule(prediction_type="v_prediction", zero_terminal_snr=True), 10)
    with pytest.raises(ValueError, match="num_steps=0"):
        sigma_schedule(NoiseSchedule(), 0)
