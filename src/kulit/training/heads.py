"""Classifier heads that turn a backbone feature map ``[N, C, h, w]`` into logits ``[N, K]``.

Both return logits (softmax, temperature and thresholds are applied outside). With the head
in eval mode every step before the last Linear is per-channel affine or pooling, so the
class score stays a linear function of the pooled features, which Grad-CAM relies on.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn


class PaperHead(nn.Module):
    """The paper's Keras head: BatchNorm -> GlobalAveragePooling -> Dense+ReLU -> Dropout -> Dense.

    BatchNorm uses Keras defaults (epsilon 1e-3, momentum 0.99, i.e. torch momentum 0.01) and
    the Dense layers Keras' Glorot-uniform weights with zero bias, to stay close to the paper.
    Keras counts it as 4*C + (C*hidden + hidden) + (hidden*K + K) parameters, 2*C non-trainable.
    """

    def __init__(
        self, in_channels: int, num_classes: int, hidden: int = 128, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(in_channels, eps=1e-3, momentum=0.01)
        self.fc1 = nn.Linear(in_channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        pooled = self.bn(feature_map).mean(dim=(2, 3))
        return cast("torch.Tensor", self.fc2(self.drop(self.relu(self.fc1(pooled)))))


class LinearHead(nn.Module):
    """The usual transfer-learning head: GlobalAveragePooling -> Dropout -> Linear ``fc``."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return cast("torch.Tensor", self.fc(self.drop(feature_map.mean(dim=(2, 3)))))
