"""Channels-last memory layout for networks that mix 2D and 3D convolutions."""

from __future__ import annotations

import torch
from torch import nn


def channels_last(module: nn.Module) -> nn.Module:
    """Conv2d weights to channels-last and Conv3d weights to channels-last-3d, in place; returns ``module``.

    ``nn.Module.to(memory_format=...)`` takes one format for both ranks and fails on the other. A convolution's
    output follows its weight's layout, so activations become channels-last too (cuDNN's preferred layout for
    bf16; in eager mode the layout changes around non-conv layers can cost more than they save).
    """
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            conv.to(memory_format=torch.channels_last)
        elif isinstance(conv, nn.Conv3d):
            conv.to(memory_format=torch.channels_last_3d)
    return module
