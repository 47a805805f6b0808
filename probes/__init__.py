"""Probe transforms: each a small class over a pure function in :mod:`probes.functional`.

Probes take parameters; :mod:`probes.spec` builds them from spec strings such as
``blackout(fill=inpaint)``.
"""

from probes.base import Probe
from probes.blackout import Blackout
from probes.blur import Blur
from probes.crop_shift import CropShift
from probes.flip import Flip
from probes.grayscale import Grayscale
from probes.hair_crop import HairCrop
from probes.noise import Noise
from probes.white_patch import WhitePatch

PROBES: dict[str, type[Probe]] = {
    p.name: p for p in (Blackout, WhitePatch, Flip, HairCrop, Blur, Noise, Grayscale, CropShift)
}

__all__ = ["PROBES", "Probe"]
