"""Parameter counts as Keras ``model.summary()`` reports them, to compare with published models."""

from __future__ import annotations

from torch import nn

# Keras keeps BatchNorm moving statistics as (non-trainable) weights; torch keeps them as buffers.
_KERAS_WEIGHT_BUFFERS = ("running_mean", "running_var")


def keras_param_count(module: nn.Module) -> tuple[int, int]:
    """Return ``(total, trainable)`` the way Keras counts them.

    total = every parameter + BatchNorm ``running_mean``/``running_var`` (not
    ``num_batches_tracked``); trainable = parameters with ``requires_grad``.
    Non-trainable is ``total - trainable``.
    """
    params = list(module.parameters())  # shared parameters are counted once, as in Keras
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    for sub in module.modules():
        for name, buf in sub.named_buffers(recurse=False):
            if name in _KERAS_WEIGHT_BUFFERS and buf is not None:
                total += buf.numel()
    return total, trainable
