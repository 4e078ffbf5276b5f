"""CUDA-graph replay of fixed-shape denoiser calls: sampling steps and training steps.

PyTorch's whole-network capture (``torch.cuda.graph``, ``torch.cuda.make_graphed_callables``) removes the
per-kernel launch cost of the many small kernels a UNet call issues at small batch or resolution; what is written
here is only the warm-up, static-buffer and replay bookkeeping that the PyTorch CUDA-graphs guide prescribes, and the
garbage-collection guard below.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import Tensor, nn


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Exempt every object that exists when the block starts from garbage collection until it ends (``gc.freeze``).

    A CUDA graph that died in a reference cycle (``make_graphed_callables`` leaves its module in one) and is freed by
    a collection while another graph is being captured calls a CUDA API that the capture forbids, which invalidates
    it (``cudaErrorStreamCaptureInvalidated``). PyTorch stopped collecting before captures in 2.9
    (pytorch/pytorch#158193; #161037 proposed turning the collector off instead). Freezing keeps collecting the
    garbage made inside the block, such as the activations of ``make_graphed_callables``' warm-up iterations. It
    costs next to nothing (two list splices), where a collection first would take about a quarter of a second per
    capture once a UNet's libraries are loaded. ``gc.unfreeze`` at the end also returns objects that others froze
    before the block.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
            with gc_frozen(), torch.cuda.graph(self.graph):
                self.out = self.denoise(self.x, self.t)
        else:
            self.x.copy_(x)
            self.t.copy_(t)
        self.graph.replay()
        return self.out.clone()


class _Call(nn.Module):
    """``module(*args)`` as a module of its own, so that ``torch.cuda.make_graphed_callables`` replaces this
    wrapper's ``forward`` and not ``module``'s (which sampling and validation keep calling eagerly)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Tensor) -> Tensor:
        return self.module(*args)


class GraphedTrainingCall:
    """Forward and backward of ``module(*args)`` captured as CUDA graphs on the first call and replayed on every
    later call with the same argument shapes and dtypes and the same train/eval mode of ``module``; other calls
    (a smaller last batch) run ``module`` eagerly and are counted in ``eager_calls``.

    The capture is PyTorch's ``torch.cuda.make_graphed_callables`` (warm-up iterations, which also run any
    ``torch.compile`` of submodules, then one graph for the forward and one for the backward); written here are
    only the lazy capture at the first training batch and the shape check. Replaying removes the launch cost of
    the many small kernels of models whose frozen part is large and whose trainable part is many small modules.
    The backward graph writes the gradients into static buffers, which reach ``.grad`` as they are (no copy). The
    next replay overwrites them, so a call that finds a ``.grad`` still holding its buffer (gradients accumulating
    over micro-batches) first replaces it by a copy: one copy per accumulation window, none without accumulation.
    Requirements (PyTorch's): the forward and backward do not synchronise with the host, the module's
    parameters stay the same tensors, and autocast runs with ``cache_enabled=False`` (as Lightning's does).
    args: tensors; returns ``module(*args)`` (a tensor of its own, not the graph's output buffer).
    """

    def __init__(self, module: nn.Module) -> None:
        self.call = _Call(module)
        self.graphed: nn.Module | None = None
        self.signature: tuple | None = None
        self.eager_calls = 0
        self.trainable: list[nn.Parameter] = []
        self.gradient_addresses: dict[int, int] = {}  # index in trainable -> where its last gradient was written

    def __call__(self, *args: Tensor) -> Tensor:
        signature = (self.call.module.training, *((a.shape, a.dtype, a.device) for a in args))
        if self.graphed is None:
            self.trainable = [parameter for parameter in self.call.parameters() if parameter.requires_grad]
            for index, parameter in enumerate(self.trainable):
                parameter.register_hook(partial(note_address, self.gradient_addresses, index))
            self.call.training = self.call.module.training  # the flag only: frozen submodules stay in eval mode
            static = tuple(a.detach().clone().requires_grad_(a.requires_grad) for a in args)
            with gc_frozen():
                self.graphed = torch.cuda.make_graphed_callables(self.call, static)
            self.signature = signature
        if signature != self.signature:
            self.eager_calls += 1
            return self.call.module(*args)
        for index, parameter in enumerate(self.trainable):
            if parameter.grad is not None and parameter.grad.data_ptr() == self.gradient_addresses.get(index):
                parameter.grad = parameter.grad.clone()  # a gradient buffer this replay would overwrite
        return self.graphed(*args).clone()  # the graph's output buffer is overwritten by the next replay


def note_address(addresses: dict[int, int], key: int, gradient: Tensor) -> Tensor:
    """Tensor hook: notes where ``gradient`` was written, under ``key``, and passes it on. It holds no module or
    parameter: with hooks that referred back to their parameters, a graphed model was not freed once unreferenced
    (PyTorch 2.11 on an H100: the benchmark's third capture ran out of memory), as autograd keeps a leaf's hooks
    out of the garbage collector's sight there."""
    addresses[key] = gradient.data_ptr()
    return gradient
