"""Probe transforms: each a small class over a pure function in :mod:`probes.functional`."""

from probes.base import Probe
from probes.blackout import Blackout
from probes.flip import Flip
from probes.hair_crop import HairCrop
from probes.white_patch import WhitePatch

PROBES: dict[str, type[Probe]] = {p.name: p for p in (Blackout, WhitePatch, Flip, HairCrop)}

__all__ = ["PROBES", "Probe"]
