"""The run's configuration: one frozen object, validated once, recorded in summary.json."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from auditor.attribution import ATTRIBUTORS, AttributionOptions
from auditor.errors import ConfigError
from probes import Probe
from probes.spec import ProbeSpecError, make_probes, split_specs

# The probes a run gets unless --probes names others; blur, noise and grayscale are asked for.
# The inpainted blackout beside the black one: a black square is itself an object, and where
# the model looks it can break predictions that no random placement does (edit harm that a
# uniform placebo cannot subtract); an inpainted region just disappears, so the two fills
# together tell reliance on the region from the effect of painting over it.
DEFAULT_PROBES = ("blackout", "blackout(fill=inpaint)", "white_patch", "flip", "hair_crop")
MCNEMAR_TESTS = ("exact", "mid-p")  # see auditor.stats.mcnemar_p


@dataclass(frozen=True)
class AuditConfig:
    """Everything a run depends on besides the input files themselves.

    The model is ``model_path`` (a file), or, for a black box, ``predict``: a function
    ``package.module:function`` (or ``file.py:function``) taking uint8 images ``[N, H, W, 3]``
    and returning probabilities ``[N, classes]``; exactly one of the two is given (checked
    where the model is opened, ``auditor.models.open_model``).
    ``meta_overrides`` holds model metadata given on the command line (classes, input_size,
    mean, std, arch, target_layer); each wins over the sidecar JSON.
    ``target`` is ``predicted``, ``true`` or a class name: the class whose evidence is mapped.
    ``methods`` are the attribution methods that place regions, each a dimension of the results
    (empty: the model's default). ``faithfulness_images`` is how many images (a seeded sample)
    get deletion/insertion/ROAD curves per method; 0 turns them off. ``gallery_size`` is how
    many of the most-affected images are kept per probe arm and subgroup (the intersection of
    every group column) for the report. ``adjust_for`` names labels.csv columns (age, image
    quality…) that each error-rate gap is also reported adjusted for (``auditor.adjusted``).
    ``cues`` turns on cue discovery after the run (``auditor.cues``): the misclassified images'
    attribution regions clustered into candidate cues, each with a reliance test.
    """

    model_path: Path | None
    dataset_dir: Path
    out_dir: Path
    predict: str | None = None
    model_config: Path | None = None
    meta_overrides: dict[str, Any] = field(default_factory=dict)
    trust_model: bool = False
    label_column: str = "label"
    label_source: str | None = None  # who assigned the labels, for the report to name
    group_columns: tuple[str, ...] | None = None
    adjust_for: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    attribution: AttributionOptions = field(default_factory=AttributionOptions)
    faithfulness_images: int = 50
    target: str = "predicted"
    probes: tuple[str, ...] = DEFAULT_PROBES
    region_area: float = 0.10
    batch_size: int = 32
    seed: int = 0
    alpha: float = 0.05
    mcnemar: str = "exact"  # the guided-vs-placebo test's p: exact, or mid-p
    min_group_size: int = 10
    gallery_size: int = 3
    cues: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        # One spelling per probe, its canonical name: plan.json, resume fingerprints and the
        # results agree however --probes wrote it.
        object.__setattr__(self, "probes", tuple(p.name for p in build_probes(self.probes)))
        if not 0.0 < self.region_area < 0.5:
            raise ConfigError(f"--region-area must be between 0 and 0.5, got {self.region_area}")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"--alpha must be between 0 and 1, got {self.alpha}")
        if self.mcnemar not in MCNEMAR_TESTS:
            raise ConfigError(
                f"--mcnemar must be one of {', '.join(MCNEMAR_TESTS)}, got {self.mcnemar!r}"
            )
        if self.batch_size < 1 or self.min_group_size < 1:
            raise ConfigError("--batch-size and --min-group-size must be positive")
        if self.faithfulness_images < 0:
            raise ConfigError("--faithfulness-images must be 0 (off) or a positive count")
        unknown_methods = [m for m in self.methods if m not in ATTRIBUTORS]
        if unknown_methods:
            raise ConfigError(
                f"unknown attribution method(s) {', '.join(unknown_methods)} "
                f"(known: {', '.join(ATTRIBUTORS)})"
            )
        if len(set(self.adjust_for)) != len(self.adjust_for):
            raise ConfigError(f"--adjust-for lists a column twice: {','.join(self.adjust_for)}")
        reserved = (self.label_column, *(self.group_columns or ()))
        taken = [c for c in self.adjust_for if c in reserved]
        if taken:
            raise ConfigError(
                f"--adjust-for names {', '.join(map(repr, taken))}, the label or a group column; "
                "adjust for other columns, such as age or image quality"
            )
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"--method lists a method twice: {','.join(self.methods)}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


def probe_specs(text: str | None) -> tuple[str, ...]:
    """``--probes``' value as probe specs (``blackout(fill=inpaint),flip``); the default
    probes when it is not given.

    Raises:
        ConfigError: the parentheses of ``text`` do not balance.
    """
    if text is None:
        return DEFAULT_PROBES
    try:
        return split_specs(text) or DEFAULT_PROBES
    except ProbeSpecError as exc:
        raise ConfigError(f"--probes: {exc}") from exc


def build_probes(specs: Sequence[str]) -> list[Probe]:
    """The probes of ``specs`` (spec strings, see :mod:`probes.spec`), in order.

    Raises:
        ConfigError: a spec names an unknown probe or argument, gives a bad value, or repeats
            another probe.
    """
    try:
        return make_probes(specs)
    except ProbeSpecError as exc:
        raise ConfigError(f"--probes: {exc}") from exc
