"""Attribution maps across images: where they look, whether they can be trusted, and how they
differ between subgroups and between methods.

Per image and method the engine records, in ``attribution.parquet``: the share of the map's
mass on named face regions and the Acceptable Mask Ratio of each (when the image has face
geometry), and, for a seeded sample of images, faithfulness curves' AUCs (with the random-map
baseline under method ``random``). Maps are also warped to a canonical face frame and averaged
per method × subgroup × outcome (all images, or only the misclassified ones) into
``mean_maps.npz``; divergences between those means go to summary.json.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from auditor import faithfulness
from auditor.data import Sample
from auditor.localisation import (
    Geometry,
    MeanMaps,
    acceptable_mask_ratio,
    align,
    js_divergence,
    mass_shares,
    named_regions,
)
from auditor.records import GROUP_PREFIX, Measure
from auditor.store import ALL, MEAN_MAPS_FILE, MapKey, write_atomically

ERRORS = "error"  # the outcome that takes only misclassified images
RANDOM = "random"  # the method name of the random-map faithfulness baseline


class MapAccumulator:
    """Collects per-image measures and aligned mean maps, batch by batch, in bounded memory."""

    def __init__(
        self,
        group_columns: Sequence[str],
        *,
        scorer: faithfulness.Scorer,
        faithful_ids: frozenset[str],
        seed: int,
    ) -> None:
        self.group_columns = tuple(group_columns)
        self.mean_maps = MeanMaps()
        self._scorer = scorer
        self._faithful_ids = faithful_ids
        self._seed = seed

    def add(
        self,
        samples: Sequence[Sample],
        geometry: Sequence[Geometry],
        pixels: np.ndarray,
        predictions: Sequence[str],
        targets: Sequence[int],
        attributions: dict[str, np.ndarray],
    ) -> list[Measure]:
        """Measure one batch's maps (``attributions``: method → ``[N, H, W]``)."""
        measures: list[Measure] = []
        shape = (pixels.shape[1], pixels.shape[2])
        for index, sample in enumerate(samples):
            regions = named_regions(geometry[index], shape)
            for method, maps in attributions.items():
                measures += self._localise(sample, predictions[index], method, maps[index], regions)
                aligned = align(maps[index], geometry[index])
                if aligned is not None and aligned.sum() > 0:
                    for key in self._keys(sample, predictions[index], method):
                        self.mean_maps.add(key, aligned)
        measures += self._faithfulness(samples, pixels, predictions, targets, attributions)
        return measures

    def _keys(self, sample: Sample, prediction: str, method: str) -> list[MapKey]:
        outcomes = [ALL] + ([ERRORS] if prediction != sample.label else [])
        groups = [(ALL, ALL)] + [(c, sample.groups[c]) for c in self.group_columns]
        return [(method, g, v, o) for (g, v), o in itertools.product(groups, outcomes)]

    @staticmethod
    def _localise(
        sample: Sample,
        prediction: str,
        method: str,
        attribution: np.ndarray,
        regions: dict[str, np.ndarray],
    ) -> list[Measure]:
        def measure(name: str, region: str, value: float) -> Measure:
            return Measure(
                sample.id, sample.label, sample.groups, method, prediction, name, region, value
            )

        shares = mass_shares(attribution, regions)
        return [measure("mass_share", r, v) for r, v in shares.items()] + [
            measure("amr", r, acceptable_mask_ratio(attribution, mask))
            for r, mask in regions.items()
        ]

    def _faithfulness(
        self,
        samples: Sequence[Sample],
        pixels: np.ndarray,
        predictions: Sequence[str],
        targets: Sequence[int],
        attributions: dict[str, np.ndarray],
    ) -> list[Measure]:
        chosen = [i for i, s in enumerate(samples) if s.id in self._faithful_ids]
        if not chosen:
            return []
        images, wanted = pixels[chosen], np.asarray(targets)[chosen]
        measured: dict[str, dict[str, np.ndarray]] = {}
        for method, maps in attributions.items():
            values = faithfulness.per_image(
                images, maps[chosen], wanted, self._scorer, seed=self._seed
            )
            measured[method] = {m: values[m] for m in faithfulness.METRICS}
            # The random map depends on the image and seed only: the same for every method.
            measured[RANDOM] = {m: values[faithfulness.RANDOM + m] for m in faithfulness.METRICS}
        out = []
        for method, values in measured.items():
            for metric, per_image in values.items():
                for position, i in enumerate(chosen):
                    sample = samples[i]
                    out.append(
                        Measure(
                            sample.id,
                            sample.label,
                            sample.groups,
                            method,
                            predictions[i],
                            metric,
                            None,
                            float(per_image[position]),
                        )
                    )
        return out


def summarise_maps(
    run_dir: Path,
    mean_maps: MeanMaps,
    measures: pd.DataFrame,
    *,
    group_columns: Sequence[str],
    min_group_size: int,
    seed: int,
) -> dict[str, Any]:
    """Write ``mean_maps.npz`` and return the maps' part of summary.json.

    Mean maps are stored as ``map_<i>`` arrays; ``mean_maps`` in the summary says which
    (method, grouping, group, outcome) each index holds and how many images it averages.
    """
    keys = sorted(cast(list[MapKey], mean_maps.keys()))
    arrays: dict[str, Any] = {
        f"map_{i}": mean_maps.mean(k).astype(np.float32) for i, k in enumerate(keys)
    }
    write_atomically(run_dir / MEAN_MAPS_FILE, lambda p: _save_npz(p, arrays))
    counts = {k: mean_maps.count(k) for k in keys}
    return {
        "faithfulness": _faithfulness_summary(measures, seed),
        "localisation": _localisation_summary(measures, group_columns),
        "mean_maps": [
            dict(zip(("method", "grouping", "group", "outcome"), k, strict=True), count=counts[k])
            for k in keys
        ],
        "divergence": _divergences(mean_maps, keys, counts, min_group_size),
    }


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    with path.open("wb") as handle:  # a file object: savez would append .npz to a bare name
        np.savez_compressed(handle, **arrays)


def _faithfulness_summary(measures: pd.DataFrame, seed: int) -> list[dict[str, Any]]:
    if measures.empty:
        return []
    curves = measures[measures["region"].isna()]
    table = curves.pivot_table(
        index="image_id", columns=["method", "measure"], values="value", aggfunc="first"
    )
    out = []
    for method in sorted(m for m in curves["method"].unique() if m != RANDOM):
        paired = table[[method, RANDOM]].dropna()
        values = {
            **{m: paired[(method, m)].to_numpy() for m in faithfulness.METRICS},
            **{
                faithfulness.RANDOM + m: paired[(RANDOM, m)].to_numpy()
                for m in faithfulness.METRICS
            },
        }
        for summary in faithfulness.summarise(values, seed=seed):
            out.append({"method": method, **summary.to_dict()})
    return out


def _localisation_summary(
    measures: pd.DataFrame, group_columns: Sequence[str]
) -> list[dict[str, Any]]:
    """Mean mass share and AMR per method, subgroup and named region."""
    if measures.empty:
        return []
    located = measures[measures["region"].notna()]
    out = []
    for grouping in [ALL, *group_columns]:
        labels = (
            pd.Series(ALL, index=located.index)
            if grouping == ALL
            else located[GROUP_PREFIX + grouping]
        )
        means = located.groupby(["method", labels.rename("group"), "measure", "region"])["value"]
        for (method, group, measure, region), values in means:
            out.append(
                {
                    "method": method,
                    "grouping": grouping,
                    "group": group,
                    "measure": measure,
                    "region": region,
                    "mean": float(values.mean()),
                    "n": int(values.count()),
                }
            )
    return out


def _divergences(
    mean_maps: MeanMaps, keys: list[MapKey], counts: dict[MapKey, int], min_group_size: int
) -> list[dict[str, Any]]:
    """Jensen–Shannon divergence between subgroups' mean maps (per method and grouping) and
    between methods' mean maps over all images. Groups below the minimum size are left out."""
    out = []
    alls = [k for k in keys if k[3] == ALL and counts[k] >= min_group_size]
    for a, b in itertools.combinations(alls, 2):
        same_method_same_grouping = a[0] == b[0] and a[1] == b[1] and a[1] != ALL
        between_methods = a[0] != b[0] and a[1:] == b[1:] == (ALL, ALL, ALL)
        if same_method_same_grouping or between_methods:
            out.append(
                {
                    "kind": "groups" if same_method_same_grouping else "methods",
                    "a": {"method": a[0], "grouping": a[1], "group": a[2]},
                    "b": {"method": b[0], "grouping": b[1], "group": b[2]},
                    "js_divergence": js_divergence(mean_maps.mean(a), mean_maps.mean(b)),
                }
            )
    return out
