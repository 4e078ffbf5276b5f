"""CUDA-graph replay of a fixed-shape denoiser.

PyTorch's whole-network capture (``torch.cuda.graph``) removes the per-kernel launch cost of the many small
kernels a UNet call issues at small batch or resolution; what is written here is only the warm-up,
static-buffer and replay bookkeeping that the PyTorch CUDA-graphs guide prescribes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class GraphedDenoiser:
    """``denoise(x, t)`` run eagerly once (warm-up on a side stream), captured on the second call and replayed
    from then on: every call must have the first call's shapes and dtypes (one sampling loop).

    x (B, ...) and t (B,) or (B, F) are copied into static buffers before each replay; the returned tensor is
    a copy of the graph's static output. ``denoise`` must not synchronise with the host (no ``.item()``).
    """

    def __init__(self, denoise: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.denoise = denoise
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == 1:  # warm-up outside capture, as the guide requires
            stream = torch.cuda.Stream(device=x.device)
            stream.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(stream):
                out = self.denoise(x, t)
            torch.cuda.current_stream(x.device).wait_stream(stream)
            self.shapes = (x.shape, x.dtype, t.shape)
            return out
        if (x.shape, x.dtype, t.shape) != self.shapes:
            raise ValueError(f"a graphed denoiser was captured for x {tuple(self.shapes[0])} {self.shapes[1]}, "
                             f"t {tuple(self.shapes[2])}; got x {tuple(x.shape)} {x.dtype}, t {tuple(t.shape)}.")
        if self.graph is None:
            self.x, self.t = x.clone(), t.clone()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.denoise(self.x, self.t)
        else:
            self.x.copy_(x)
            self.t.copy_(t)
        self.graph.replay()
        return self.out.clone()
