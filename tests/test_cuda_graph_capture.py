"""The garbage-collection guard around CUDA-graph captures (``no_collection_during_capture``).

A CUDA graph that dies in a reference cycle and is collected during another graph's capture invalidates that
capture. The guard's own behaviour is tested everywhere; the captures with a dead graph in a cycle need a CUDA
device (they ran on the GPU machines; docs/benchmarks.md records the run).
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from fusionframes.diffusion.cuda_graph import GraphedDenoiser, GraphedTrainingCall, no_collection_during_capture

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


class Cycle:
    """An object that refers to itself, so only the cyclic collector frees it (and what it holds)."""

    def __init__(self, held: object) -> None:
        self.held = held
        self.me = self


@pytest.fixture
def collector_off():
    """Python's cyclic collector off for the test (so that garbage stays until a collection is asked for)."""
    gc.disable()
    yield
    gc.enable()


def test_the_guard_collects_first_and_holds_the_collector_off_until_it_ends(collector_off):
    gc.enable()
    dead = weakref.ref(Cycle(object()))
    with no_collection_during_capture():
        assert dead() is None, "the guard did not collect garbage before the block"
        assert not gc.isenabled()
    assert gc.isenabled()

    with pytest.raises(RuntimeError, match="inside"), no_collection_during_capture():
        raise RuntimeError("inside")
    assert gc.isenabled(), "an error inside the block left the collector off"

    gc.disable()
    with no_collection_during_capture():
        pass
    assert not gc.isenabled(), "the guard turned on a collector that was off before it"


def dead_graph_in_a_cycle() -> weakref.ref:
    """A captured CUDA graph that only the cyclic collector can free; a weak reference to its holder."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.zeros(1, device="cuda")
    return weakref.ref(Cycle(graph))


def collect_while_capturing() -> None:
    """Run a collection if a CUDA graph is being captured now (what an automatic one at a bad moment does)."""
    if torch.cuda.is_current_stream_capturing():
        gc.collect()


@requires_cuda
def test_sampling_capture_survives_a_collection_inside_it(collector_off):
    """A graph that died in a cycle after the warm-up call, and a denoiser that collects garbage while it is
    captured: without the guard's collection before the capture, that graph is destroyed during the capture, which
    then fails."""
    graphed = GraphedDenoiser(lambda x, t: collect_while_capturing() or 2 * x + t[:, None])
    x, t = torch.randn(2, 3, device="cuda"), torch.tensor([1.0, 2.0], device="cuda")
    torch.testing.assert_close(graphed(x, t), 2 * x + t[:, None])  # the warm-up call
    dead = dead_graph_in_a_cycle()
    for step in (1, 2):  # capture, replay
        torch.testing.assert_close(graphed(x + step, t), 2 * (x + step) + t[:, None])
    assert graphed.graph is not None and dead() is None


@requires_cuda
def test_training_capture_survives_a_collection_inside_it(collector_off):
    """The same for ``GraphedTrainingCall``: a graph that died in a cycle before the first call, and a module that
    collects garbage while its forward is captured; the replayed backward then accumulates the right gradients."""

    class Collecting(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            collect_while_capturing()
            return super().forward(x)

    torch.manual_seed(0)
    layer = Collecting(3, 2).cuda()
    x = torch.randn(4, 3, device="cuda")
    graphed = GraphedTrainingCall(layer)
    dead = dead_graph_in_a_cycle()
    for _ in range(2):  # warm-up and capture, then replay: the gradients of both calls accumulate
        graphed(x).square().sum().backward()
    y = x @ layer.weight.T + layer.bias
    torch.testing.assert_close(layer.weight.grad, 2 * 2 * y.T @ x, rtol=1e-4, atol=1e-4)
    assert graphed.graphed is not None and graphed.eager_calls == 0 and dead() is None
