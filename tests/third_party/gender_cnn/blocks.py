"""Building blocks of the third-party gender CNN (a sibling file, imported as its author does)."""

from torch import nn


def conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU, 2x2 max pooling: halves the map's side."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )
