"""A small custom gender CNN of the shape published with face-attribute papers: three conv blocks
and a linear head, about 110k parameters at the default width, trained at 224 px.

It stands in for a model an auditor is handed as ``model.py`` + a state_dict: not a timm or
torchvision name, importing a sibling file the way such code does.
"""

import torch
from blocks import conv_block
from torch import nn


class GenderCNN(nn.Module):
    def __init__(self, num_classes: int = 2, width: int = 32, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(3, width), conv_block(width, 2 * width), conv_block(2 * width, 5 * width)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(5 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(self.dropout(pooled))


def build(width: int = 32) -> GenderCNN:
    """A factory, for ``--arch package.module:build``."""
    return GenderCNN(width=width)
