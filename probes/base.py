"""The probe base class: an albumentations image-only transform that edits a given region."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Literal

import albumentations as A
import numpy as np

RegionFrom = Literal["attribution", "face", "whole_image"]
# How a region probe covers its region, for telling reliance on the region from the edit's own
# effect: "paint" lays a colour no photo editor would use (black, white), so a prediction can
# change because a new object appeared; "erase" makes the region disappear into its
# surroundings. A painted arm's gap that its erased twin lacks is the paint's, not the region's.
Cover = Literal["paint", "erase"]
ParamValue = str | int | float  # what a probe parameter may hold: spec strings parse to these


class Probe(A.ImageOnlyTransform):
    """A deterministic edit of one image, called as ``probe(image=img, region=mask)["image"]``.

    Subclasses set ``name`` and ``region_from`` (where their region comes from) and implement
    :meth:`edit`. ``region`` is a boolean ``[H, W]`` mask (None for whole-image probes); ``keep``
    is an optional mask of pixels the edit must not draw from or change (the face, for hair).

    Parameters are a subclass's ``__init__`` keyword arguments, albumentations-style: each is
    kept as an attribute of the same name, so ``get_transform_init_args`` serialises them, and
    each default reproduces the plain probe. A subclass sets them before calling
    ``super().__init__()``, which then names the instance: on the class, ``name`` is the
    registry name and ``description`` the plain edit's; on an instance they are its canonical
    name (:func:`spec_name`, the name in results and policies) and :meth:`describe`'s text.
    """

    name: str
    region_from: ClassVar[RegionFrom]
    description: str
    cover: Cover | None = None

    def __init__(self) -> None:
        super().__init__(p=1.0)
        self.name = spec_name(type(self).name, self.changed_args())
        self.description = self.describe()

    @classmethod
    def defaults(cls) -> dict[str, ParamValue]:
        """Every parameter with its default, read from ``__init__``'s signature."""
        parameters = inspect.signature(cls.__init__).parameters
        return {name: p.default for name, p in parameters.items() if name != "self"}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return tuple(self.defaults())

    def changed_args(self) -> dict[str, ParamValue]:
        """The parameters that differ from their defaults: what makes this probe not the plain
        one, and so what its name and description must show."""
        defaults = self.defaults()
        return {k: v for k, v in self.get_transform_init_args().items() if v != defaults[k]}

    def describe(self) -> str:
        """The class's description, followed by the parameters that differ from the defaults."""
        changed = self.changed_args()
        shown = ", ".join(f"{k} {format_value(v)}" for k, v in sorted(changed.items()))
        return f"{type(self).description} ({shown})" if changed else type(self).description

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        return {"region": data.get("region"), "keep": data.get("keep")}

    def apply(
        self,
        img: np.ndarray,
        region: np.ndarray | None = None,
        keep: np.ndarray | None = None,
        **params: Any,
    ) -> np.ndarray:
        return self.edit(img, region, keep)

    def edit(
        self, image: np.ndarray, region: np.ndarray | None, keep: np.ndarray | None
    ) -> np.ndarray:
        raise NotImplementedError


def format_value(value: ParamValue) -> str:
    """A parameter as a spec writes it: floats without a trailing ``.0`` (``sigma=8``)."""
    return repr(value).removesuffix(".0") if isinstance(value, float) else str(value)


def spec_name(name: str, changed: dict[str, ParamValue]) -> str:
    """The canonical name of probe ``name`` with ``changed`` (non-default) parameters: the bare
    name when there are none, so default probes keep the names that results and policies use,
    else ``name(key=value,...)`` sorted by key, so equal probes get one name however written."""
    if not changed:
        return name
    return f"{name}({','.join(f'{k}={format_value(v)}' for k, v in sorted(changed.items()))})"
