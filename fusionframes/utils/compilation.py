"""torch.compile of many small modules in place."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def compile_each(modules: Sequence[nn.Module], **kwargs: object) -> None:
    """``nn.Module.compile`` every module of ``modules`` in place (state-dict names and callers unchanged).

    Shapes are static unless ``dynamic`` is passed. Modules of one class share dynamo's code cache, one compiled
    graph per input signature, and its per-function recompile limit (``torch._dynamo.config.cache_size_limit``, 8
    by default) is raised to two per module so that none of them falls back to eager.
    """
    kwargs.setdefault("dynamic", False)
    config = torch._dynamo.config
    config.cache_size_limit = max(config.cache_size_limit, 2 * len(modules))
    for module in modules:
        module.compile(**kwargs)
