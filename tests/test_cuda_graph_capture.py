"""The garbage-collection guard around CUDA-graph captures (``gc_frozen``).

A CUDA graph that died in a reference cycle and is freed by a collection during another graph's capture invalidates
that capture. The guard's own behaviour is tested everywhere; the captures with a dead graph in a cycle need a CUDA
device (they ran on the GPU machines; docs/benchmarks.md records the run).
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from fusionframes.diffusion.cuda_graph import GraphedDenoiser, GraphedTrainingCall, gc_frozen

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


class Cycle:
    """An object that refers to itself, so only the cyclic collector frees it (and what it holds)."""

    def __init__(self, held: object) -> None:
        self.held = held
        self.me = self


def test_the_guard_spares_the_garbage_from_before_it_and_collects_the_garbage_made_inside():
    before = weakref.ref(Cycle(object()))
    with gc_frozen():
        inside = weakref.ref(Cycle(object()))
        gc.collect()
        assert before() is not None and inside() is None
    gc.collect()
    assert before() is None

    before = weakref.ref(Cycle(object()))
    with pytest.raises(RuntimeError, match="inside"), gc_frozen():
        raise RuntimeError("inside")
    gc.collect()
    assert before() is None, "an error inside the block left the garbage from before it frozen"


def dead_graph_in_a_cycle() -> weakref.ref:
    """A weak reference to the holder of a captured CUDA graph that only the cyclic collector can free."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.zeros(1, device="cuda")
    return weakref.ref(Cycle(graph))


def collect_while_capturing(dead: weakref.ref, survived: list[bool]) -> None:
    """While a CUDA graph is being captured: collect garbage, as an automatic collection at a bad moment would, and
    note whether the dead graph survived it (if not, it was destroyed during the capture, which invalidates it)."""
    if torch.cuda.is_current_stream_capturing():
        gc.collect()
        survived.append(dead() is not None)


@requires_cuda
def test_sampling_capture_survives_a_collection_while_a_dead_graph_waits_in_a_cycle():
    survived, dead = [], None
    graphed = GraphedDenoiser(lambda x, t: collect_while_capturing(dead, survived) or 2 * x + t[:, None])
    x, t = torch.randn(2, 3, device="cuda"), torch.tensor([1.0, 2.0], device="cuda")
    torch.testing.assert_close(graphed(x, t), 2 * x + t[:, None])  # the warm-up call
    dead = dead_graph_in_a_cycle()
    for step in (1, 2):  # capture, replay
        torch.testing.assert_close(graphed(x + step, t), 2 * (x + step) + t[:, None])
    gc.collect()
    assert survived == [True] and dead() is None  # garbage, which outlived the capture


@requires_cuda
def test_training_capture_survives_a_collection_while_a_dead_graph_waits_in_a_cycle():
    """The same for ``GraphedTrainingCall``; the replayed backward then accumulates the right gradients."""
    survived, dead = [], dead_graph_in_a_cycle()

    class Collecting(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            collect_while_capturing(dead, survived)
            return super().forward(x)

    torch.manual_seed(0)
    layer = Collecting(3, 2).cuda()
    x = torch.randn(4, 3, device="cuda")
    graphed = GraphedTrainingCall(layer)
    for _ in range(2):  # warm-up and capture, then replay: the gradients of both calls accumulate
        graphed(x).square().sum().backward()
    y = x @ layer.weight.T + layer.bias
    torch.testing.assert_close(layer.weight.grad, 2 * 2 * y.T @ x, rtol=1e-4, atol=1e-4)
    gc.collect()
    assert survived == [True] and graphed.eager_calls == 0 and dead() is None
