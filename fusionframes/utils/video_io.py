"""Video files in memory: mp4 encoding and decoding with PyAV (shards, samples and logged clips share it).

PyAV is imported on first use, so code paths that write no video (e.g. GPU jobs) run without it.
"""

from __future__ import annotations

import io
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import av

MPEG4_BIT_RATE = 20_000_000


@cache
def _codec() -> tuple[str, dict[str, str]]:
    """(codec, options): H.264 at crf 12 where PyAV has libx264, else MPEG-4 at a high bit rate."""
    import av

    return ("libx264", {"crf": "12"}) if "libx264" in av.codecs_available else ("mpeg4", {})


def encode_video(frames: np.ndarray, fps: int) -> bytes:
    """uint8 (F, H, W, 3) with even H and W -> mp4 bytes (yuv420p at `fps` frames per second)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"Video must be non-empty uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}.")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"Video height and width must be even for yuv420p, got {height}x{width}.")
    import av

    codec, options = _codec()
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        if codec == "mpeg4":
            stream.bit_rate = MPEG4_BIT_RATE
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def decode_frames(data: bytes) -> list[av.VideoFrame]:
    """Every frame of the first video stream; ValueError on corrupt, truncated, empty or resizing video."""
    import av

    with av.open(io.BytesIO(data)) as container:
        if not container.streams.video:
            raise ValueError("Container has no video stream.")
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        expected = stream.frames  # 0 where the container does not index its frames
    if not frames or len(frames) < expected:
        raise ValueError(f"Decoded {len(frames)} frames of the {expected} the container indexes.")
    if any((f.width, f.height) != (frames[0].width, frames[0].height) for f in frames):
        raise ValueError("Frame size changes within the video.")
    return frames


def decode_video(data: bytes) -> np.ndarray:
    """Encoded video bytes -> uint8 (F, H, W, 3); raises ValueError on corrupt or truncated data."""
    return np.stack([frame.to_ndarray(format="rgb24") for frame in decode_frames(data)])
