"""DenseNet-BC in plain torch with torchvision's exact state_dict names, so its weight files load.

torchvision is not a dependency: this rebuilds the architecture of ``torchvision.models.densenet``
(same module names, no conv biases, same init) and loads a user's ``densenet201`` state dict file.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from kulit.errors import ModelError

DENSENET201_OUT_CHANNELS = 1920  # channels of the final feature map (after norm5)

# Old torchvision checkpoints name keys 'denselayer1.norm.1.weight'; torchvision's own
# _load_state_dict rewrites them with this pattern to 'denselayer1.norm1.weight'.
_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
_MAX_KEYS_SHOWN = 5


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 bottleneck then BN-ReLU-Conv3x3 producing ``growth_rate`` new channels."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        mid = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, mid, kernel_size=1, stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, growth_rate, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(x)))
        return cast("torch.Tensor", self.conv2(self.relu2(self.norm2(x))))


class _DenseBlock(nn.Module):
    """Dense layers, each fed the block input concatenated with all earlier layer outputs."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.children():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    """BN-ReLU-Conv1x1 that halves the channels, then 2x2 average pooling halves the size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(OrderedDict([
            ("norm", nn.BatchNorm2d(in_channels)),
            ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=False)),
            ("pool", nn.AvgPool2d(kernel_size=2, stride=2)),
        ]))


class DenseNet(nn.Module):
    """DenseNet-BC (Huang et al. 2017) laid out like torchvision's, defaults are DenseNet-201.

    With ``num_classes=None`` it is a backbone: ``forward`` returns the ReLU'd feature map
    ``[N, out_channels, H/32, W/32]``; with a number it adds torchvision's ``classifier`` and
    returns logits, as ``torchvision.models.densenet201`` does.
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 48, 32),
        num_init_features: int = 64,
        bn_size: int = 4,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3,
                                bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(num_layers, channels, growth_rate, bn_size)
            self.features.add_module(f"denseblock{i + 1}", block)
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.out_channels = channels
        self.classifier: nn.Linear | None = (
            nn.Linear(channels, num_classes) if num_classes is not None else None
        )

        # Same init as torchvision, so an unloaded model behaves like theirs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x))
        if self.classifier is None:
            return out
        return cast(
            "torch.Tensor", self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)))

    # backbones.Backbone: the first layer is conv0, norm0, relu0; no partial fine-tuning
    def first_layer_split(self) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                         Callable[[torch.Tensor], torch.Tensor]]:
        feats = self.features
        return feats[:3], (lambda s: F.relu(feats[3:](s)))

    def forward_stem(self, x: torch.Tensor, n_top: int) -> torch.Tensor:
        raise ModelError("finetune_blocks needs an EfficientNet-Lite (or tiny) backbone, "
                         "not densenet201; use --finetune-blocks 0")

    def top(self, n_top: int) -> nn.Module:
        raise ModelError("finetune_blocks needs an EfficientNet-Lite (or tiny) backbone, "
                         "not densenet201; use --finetune-blocks 0")


def build_densenet201(weights: Path | str | None = None) -> DenseNet:
    """DenseNet-201 backbone (no classifier) returning ``[N, 1920, H/32, W/32]``.

    ``weights`` is a torchvision-style ``densenet201`` state dict file (``torch.save`` of
    ``model.state_dict()``); ``classifier.*`` is dropped and old ``norm.1``-style keys are
    renamed. Raises ModelError if the file is missing, unreadable or does not fit.
    """
    model = DenseNet(growth_rate=32, block_config=(6, 12, 48, 32), num_init_features=64, bn_size=4)
    if weights is not None:
        load_torchvision_state_dict(model, read_state_dict(Path(weights)))
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict file safely (``weights_only``); ModelError if it is not one."""
    if not path.is_file():
        raise ModelError(f"DenseNet weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refuses arbitrary pickled objects
        raise ModelError(
            f"cannot read DenseNet weights {path}: it holds pickled Python objects (e.g. a whole "
            "model), not only tensors; save it with torch.save(model.state_dict(), path)"
        ) from exc
    except Exception as exc:  # torch raises many types for corrupt or non-torch files
        raise ModelError(
            f"cannot read DenseNet weights {path}: not a torch state dict file "
            f"({type(exc).__name__}); save it with torch.save(model.state_dict(), path)"
        ) from exc
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(
            f"{path} holds a {type(obj).__name__}, not a state dict "
            "(a mapping of parameter names to tensors)"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        hint = ""
        if any(k in obj for k in ("state_dict", "model", "model_state_dict")):
            hint = "; it looks like a training checkpoint, save only model.state_dict()"
        raise ModelError(
            f"{path} is not a state dict: {len(bad)} entries are not name->tensor, "
            f"e.g. {_show(bad)}{hint}"
        )
    return dict(obj)


def load_torchvision_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load torchvision DenseNet weights into ``model``, checking every key and shape first.

    Drops ``classifier.*`` when ``model`` has no classifier and renames old-style keys; a missing
    ``num_batches_tracked`` is allowed (checkpoints older than PyTorch 0.4.1 lack it).
    """
    expected = model.state_dict()
    has_classifier = any(k.startswith("classifier.") for k in expected)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _OLD_KEY.match(key)
        if match:
            key = match.group(1) + match.group(2)
        if key.startswith("classifier.") and not has_classifier:
            continue
        renamed[key] = value

    missing = [k for k in expected if k not in renamed and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in renamed if k not in expected]
    wrong_shape = [
        f"{k} {tuple(renamed[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in renamed and renamed[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_show(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_show(unexpected)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} keys with wrong shape (file != model): "
                        f"{_show(wrong_shape)}")
    if problems:
        raise ModelError("DenseNet weights do not fit densenet201: " + "; ".join(problems))

    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in renamed:
            renamed[key] = torch.zeros_like(value)
    model.load_state_dict(renamed, strict=True)


def _show(items: list[str]) -> str:
    """First few items, comma-separated, with a count of the rest."""
    shown = ", ".join(items[:_MAX_KEYS_SHOWN])
    rest = len(items) - _MAX_KEYS_SHOWN
    return shown + (f", ... (+{rest} more)" if rest > 0 else "")


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
