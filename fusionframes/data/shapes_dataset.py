"""Map-style dataset over the shapes world, laid out by any clip sampler."""

from __future__ import annotations

import json

import numpy as np
import torch

from fusionframes.data.samplers import ClipSampler, frames_to_tensor
from fusionframes.data.shapes import ShapesWorld
from fusionframes.utils.validation import check_int


class ShapesDataset(torch.utils.data.Dataset):
    """Sample i is scene i of `world`, with a clip drawn by `sampler`; deterministic in (seed, i).

    Renders only the clip's frames. Returns the sampler's dict (e.g. "video" (F, 3, H, W) in [-1, 1])
    plus "caption" (str) and "meta" (JSON of the scene's ground truth).
    """

    def __init__(self, world: ShapesWorld, sampler: ClipSampler, length: int, seed: int = 0) -> None:
        check_int("ShapesDataset length", length, 1)
        check_int("ShapesDataset seed", seed, 0)
        if world.num_frames < sampler.min_source_frames:
            raise ValueError(
                f"The shapes world's num_frames {world.num_frames} is too short for "
                f"{type(sampler).__name__}, which needs at least {sampler.min_source_frames} frames."
            )
        self.world, self.sampler, self.length, self.seed = world, sampler, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(f"ShapesDataset index {i} is out of range [0, {self.length}).")
        scene = self.world.scene(i)
        # Stream 1 of (seed, i): the clip choice stays independent of the scene, which the world
        # draws from (world.seed, i) and would otherwise share its random numbers when seeds agree.
        rng = np.random.default_rng((self.seed, i, 1))
        clip = self.sampler.sample(self.world.num_frames, rng)
        frames = frames_to_tensor(self.world.render(scene, clip.indices))
        return {
            **self.sampler.arrange(frames, clip),
            "caption": scene.caption(),
            "meta": json.dumps(scene.to_dict()),
        }
