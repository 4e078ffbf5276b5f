"""Procedural text-video world: one coloured shape moving or resizing over a plain background.

Every video is `num_frames` long at 24 fps, deterministic in (seed, index), rendered analytically
(anti-aliased from a signed distance, so sub-pixel motion is real) as uint8 (F, H, W, 3), and keeps
the whole shape in view on every frame. Ground truth (`ShapeScene`) travels as JSON metadata.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from fusionframes.utils.validation import is_int

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
# Colour names avoid a leading vowel so every caption reads "a <colour> <shape> ...".
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 70),
    "blue": (50, 90, 230),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 200),
    "cyan": (40, 200, 210),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "white": (255, 255, 255),
}
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "growing", "shrinking")
SPEEDS: tuple[str, ...] = ("slowly", "quickly")

# Fraction of the free room a shape traverses (or its radius range it covers) over the whole video.
SPEED_FRACTIONS: dict[str, float] = {"slowly": 0.45, "quickly": 0.9}
# Unit direction in image coordinates (x right, y down) of each translation.
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "background", "motion", "speed")
SPLITS: tuple[str, ...] = ("train", "holdout", "all")
MARGIN = 2.0  # pixels between the shape's extent and the frame border: border pixels stay background


@dataclass(frozen=True)
class ShapeScene:
    """Ground truth of one video; positions in pixels (x right, y down), pixel i covers [i, i + 1).

    Every shape fits in the disc of `radius` around `centre` (circumradius for polygons).
    """

    shape: str
    colour: str
    background: str
    motion: str
    speed: str
    centre: tuple[float, float]
    velocity: tuple[float, float]
    radius: float
    growth: float

    def caption(self) -> str:
        action = f"moving {self.motion}" if self.motion in DIRECTIONS else self.motion
        return f"a {self.colour} {self.shape} {action} {self.speed} on a {self.background} background"

    def centre_at(self, frame: float) -> tuple[float, float]:
        return (self.centre[0] + self.velocity[0] * frame, self.centre[1] + self.velocity[1] * frame)

    def radius_at(self, frame: float) -> float:
        return self.radius + self.growth * frame

    def to_dict(self) -> dict:
        return {**asdict(self), "centre": list(self.centre), "velocity": list(self.velocity),
                "caption": self.caption()}

    @classmethod
    def from_dict(cls, d: Mapping) -> ShapeScene:
        fields = {k: v for k, v in d.items() if k != "caption"}
        fields["centre"] = tuple(fields["centre"])
        fields["velocity"] = tuple(fields["velocity"])
        return cls(**fields)


def _box_sdf(x: np.ndarray, y: np.ndarray, half: np.ndarray) -> np.ndarray:
    qx, qy = np.abs(x) - half, np.abs(y) - half
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _triangle_sdf(x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Exact signed distance to an upward equilateral triangle of circumradius r centred at 0.

    Hand-written (after Inigo Quilez's sdEquilateralTriangle): no maintained library provides
    vectorised 2D signed distances.
    """
    k = math.sqrt(3.0)
    half_side = r * k / 2
    px = np.abs(x) - half_side
    py = -y + half_side / k  # image y points down; the apex points up
    fold = px + k * py > 0
    px, py = np.where(fold, (px - k * py) / 2, px), np.where(fold, (-k * px - py) / 2, py)
    px = px - np.clip(px, -2 * half_side, 0)
    return -np.hypot(px, py) * np.sign(py)


_SDFS = {
    "circle": lambda x, y, r: np.hypot(x, y) - r,
    "square": lambda x, y, r: _box_sdf(x, y, r / math.sqrt(2.0)),
    "diamond": lambda x, y, r: _box_sdf((x + y) / math.sqrt(2.0), (x - y) / math.sqrt(2.0), r / math.sqrt(2.0)),
    "triangle": _triangle_sdf,
}


def _check_choice(name: str, values: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    values = tuple(values)
    if not values:
        raise ValueError(f"ShapesWorld needs at least one {name}; allowed: {', '.join(allowed)}.")
    for value in values:
        if value not in allowed:
            raise ValueError(f"Unknown {name} {value!r}; allowed: {', '.join(allowed)}.")
    return values


class ShapesWorld:
    """Infinite, seed-deterministic set of shape videos of `num_frames` frames at `resolution`².

    `scene(i)` draws a combination uniformly among those the split allows, then the continuous
    parameters; `render(scene, frames)` returns uint8 (len(frames), resolution, resolution, 3).
    """

    def __init__(
        self,
        resolution: int = 64,
        num_frames: int = 400,
        fps: int = 24,
        seed: int = 0,
        shapes: Sequence[str] = SHAPES,
        colours: Sequence[str] = tuple(COLOURS),
        backgrounds: Sequence[str] = tuple(BACKGROUNDS),
        motions: Sequence[str] = MOTIONS,
        speeds: Sequence[str] = SPEEDS,
        holdout: Sequence[Mapping[str, str]] = (),
        split: str = "train",
    ) -> None:
        if not is_int(resolution) or resolution < 16:
            raise ValueError(f"ShapesWorld resolution must be at least 16 pixels, got {resolution!r}.")
        if not is_int(num_frames) or num_frames < 1:
            raise ValueError(f"ShapesWorld num_frames must be at least 1, got {num_frames!r}.")
        if not is_int(fps) or fps < 1:
            raise ValueError(f"ShapesWorld fps must be at least 1, got {fps!r}.")
        if not is_int(seed) or seed < 0:
            raise ValueError(f"ShapesWorld seed must be a non-negative integer, got {seed!r}.")
        if split not in SPLITS:
            raise ValueError(f"Unknown ShapesWorld split {split!r}; allowed: {', '.join(SPLITS)}.")
        self.resolution, self.num_frames, self.fps, self.seed, self.split = (
            resolution, num_frames, fps, seed, split)
        choices = {
            "shape": _check_choice("shape", shapes, SHAPES),
            "colour": _check_choice("colour", colours, tuple(COLOURS)),
            "background": _check_choice("background", backgrounds, tuple(BACKGROUNDS)),
            "motion": _check_choice("motion", motions, MOTIONS),
            "speed": _check_choice("speed", speeds, SPEEDS),
        }
        self.holdout = [dict(h) for h in holdout]
        for rule in self.holdout:
            for key, value in rule.items():
                if key not in choices:
                    raise ValueError(f"Unknown holdout attribute {key!r}; allowed: {', '.join(ATTRIBUTES)}.")
                if value not in choices[key]:
                    raise ValueError(f"Unknown holdout {key} {value!r}; allowed: {', '.join(choices[key])}.")
        every = [dict(zip(ATTRIBUTES, c)) for c in itertools.product(*(choices[a] for a in ATTRIBUTES))]
        held = [any(all(c[k] == v for k, v in rule.items()) for rule in self.holdout) for c in every]
        self._combinations = [c for c, h in zip(every, held) if split == "all" or h == (split == "holdout")]
        if not self._combinations:
            raise ValueError(f"ShapesWorld split {split!r} with holdout {self.holdout} leaves no attribute "
                             "combination; hold out fewer combinations or choose another split.")
        ys, xs = np.meshgrid(np.arange(resolution) + 0.5, np.arange(resolution) + 0.5, indexing="ij")
        self._grid = (xs.astype(np.float32), ys.astype(np.float32))

    def combinations(self) -> list[dict[str, str]]:
        return [dict(c) for c in self._combinations]

    def scene(self, index: int) -> ShapeScene:
        if index < 0:
            raise ValueError(f"Scene index must be a non-negative integer, got {index}.")
        rng = np.random.default_rng((self.seed, index))
        combo = self._combinations[rng.integers(len(self._combinations))]
        size, span = float(self.resolution), float(max(self.num_frames - 1, 1))
        fraction = SPEED_FRACTIONS[combo["speed"]]
        if combo["motion"] in DIRECTIONS:
            radius = rng.uniform(0.08, 0.16) * size
            lo, hi = MARGIN + radius, size - MARGIN - radius  # range of the centre along each axis
            distance = fraction * (hi - lo)
            dx, dy = DIRECTIONS[combo["motion"]]
            low_end = lo + rng.uniform(0, hi - lo - distance)  # of the travelled segment
            along = low_end + distance if dx + dy < 0 else low_end  # start where the motion leaves from
            across = rng.uniform(lo, hi)
            centre = (along, across) if dx else (across, along)
            velocity, growth = (dx * distance / span, dy * distance / span), 0.0
        else:
            r_lo, r_hi = 0.06 * size, size / 2 - MARGIN - 0.1 * size
            change = fraction * (r_hi - r_lo)
            small = r_lo + rng.uniform(0, r_hi - r_lo - change)
            big = small + change
            centre = tuple(rng.uniform(MARGIN + big, size - MARGIN - big, size=2))
            growing = combo["motion"] == "growing"
            radius, growth = (small, change / span) if growing else (big, -change / span)
            velocity = (0.0, 0.0)
        return ShapeScene(**combo, centre=(float(centre[0]), float(centre[1])),
                          velocity=(float(velocity[0]), float(velocity[1])),
                          radius=float(radius), growth=float(growth))

    def render(self, scene: ShapeScene, frames: Sequence[int]) -> np.ndarray:
        """Frames at the given source indices -> uint8 (len(frames), H, W, 3), soft ~1 px edges."""
        t = np.asarray(frames, dtype=np.float32)
        if t.size and (t.min() < 0 or t.max() >= self.num_frames):
            raise ValueError(f"Frame indices must lie in [0, {self.num_frames - 1}] for this world, "
                             f"got {int(t.min())}..{int(t.max())}.")
        t = t[:, None, None]
        xs, ys = self._grid
        x = xs - (scene.centre[0] + scene.velocity[0] * t)
        y = ys - (scene.centre[1] + scene.velocity[1] * t)
        alpha = np.clip(0.5 - _SDFS[scene.shape](x, y, scene.radius + scene.growth * t), 0, 1)[..., None]
        background = np.asarray(BACKGROUNDS[scene.background], dtype=np.float32)
        colour = np.asarray(COLOURS[scene.colour], dtype=np.float32)
        return np.rint(background + alpha * (colour - background)).astype(np.uint8)
