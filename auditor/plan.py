"""The run plan: everything a worker needs to audit any batch, fixed before the first one runs.

A plan is frozen and picklable, so the same object drives the in-process executor and Ray's
workers. Its batches are cut from the samples sorted by image id and named by their position
and a digest of their ids, so a resumed run, a shuffled run and a distributed run all cut the
same batches under the same names. :meth:`RunPlan.fingerprint` is what a resumed run must match.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditor.attribution import AttributionOptions
from auditor.config import AuditConfig
from auditor.data import Dataset, Sample, Skip
from auditor.models import ModelMeta
from auditor.summary import dataset_identity, model_identity


@dataclass(frozen=True)
class PlannedBatch:
    """One batch: a stable id and the samples it audits."""

    batch_id: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class RunPlan:
    """What to audit and how: the inputs a batch step needs, and nothing that changes per batch.

    ``model`` and ``dataset`` are their identities as summary.json records them (file and
    SHA-256, kind and metadata; root, labels.csv's SHA-256, columns and row count);
    ``labels_sha256`` digests every sample's id, label and groups (so it covers an ImageFolder
    tree as well as labels.csv); ``faithful_ids`` are the images that get faithfulness curves;
    ``covariate_columns`` are the ``--adjust-for`` columns the records carry.
    """

    config: AuditConfig
    meta: ModelMeta
    model: dict[str, Any]
    dataset: dict[str, Any]
    methods: tuple[str, ...]
    options: AttributionOptions
    default_note: str | None
    group_columns: tuple[str, ...]
    labels_sha256: str
    faithful_ids: frozenset[str]
    skips: tuple[Skip, ...]
    batches: tuple[PlannedBatch, ...]
    covariate_columns: tuple[str, ...] = ()

    @property
    def images(self) -> int:
        return sum(len(b.samples) for b in self.batches)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the stored one for its parts to be reusable.

        The output directory and the device are left out: moving a run or resuming it on
        another machine keeps its parts valid.
        """
        config = {k: v for k, v in self.config.to_json().items() if k not in ("out_dir", "device")}
        fingerprint = {
            "model_sha256": self.model["sha256"],
            "arch_sha256": self.model["arch_sha256"],
            "labels_sha256": self.labels_sha256,
            "methods": list(self.methods),
            "options": dataclasses.asdict(self.options),
            "config": config,
            "batches": [b.batch_id for b in self.batches],
        }
        # As plan.json stores it (tuples become lists), so a stored one compares equal.
        stored: dict[str, Any] = json.loads(json.dumps(fingerprint))
        return stored


def make_plan(
    config: AuditConfig,
    *,
    meta: ModelMeta,
    model_kind: str,
    single_logit: bool,
    dataset: Dataset,
    methods: Sequence[str],
    options: AttributionOptions,
    default_note: str | None,
) -> RunPlan:
    samples = sorted(dataset.samples, key=lambda s: s.id)
    return RunPlan(
        config=config,
        meta=meta,
        model=model_identity(config.model_path, config.predict, model_kind, single_logit, meta),
        dataset=dataset_identity(dataset),
        methods=tuple(methods),
        options=options,
        default_note=default_note,
        group_columns=dataset.group_columns,
        labels_sha256=labels_digest(samples, dataset.skips),
        faithful_ids=_faithfulness_sample(samples, config),
        skips=tuple(dataset.skips),
        batches=tuple(cut_batches(samples, config.batch_size)),
        covariate_columns=dataset.covariate_columns,
    )


def cut_batches(samples: Sequence[Sample], size: int) -> list[PlannedBatch]:
    """``samples`` (sorted by id) in batches of ``size``, each named by its position and a
    digest of its ids, so every run of the same images names the same batches alike."""
    out = []
    for number, start in enumerate(range(0, len(samples), size)):
        chunk = tuple(samples[start : start + size])
        digest = hashlib.sha256("\0".join(s.id for s in chunk).encode()).hexdigest()[:10]
        out.append(PlannedBatch(f"{number:06d}-{digest}", chunk))
    return out


def labels_digest(samples: Sequence[Sample], skips: Sequence[Skip]) -> str:
    """SHA-256 of what the dataset says of every image (id, label, groups, geometry, and the
    covariates where --adjust-for names some) and of every skipped row: an ImageFolder tree has
    no labels.csv to hash, and a moved dataset keeps its digest."""
    digest = hashlib.sha256()
    for sample in samples:
        landmarks = sorted((sample.landmarks or {}).items())
        described = (
            sample.id,
            sample.label,
            sorted(sample.groups.items()),
            sample.face_box,
            landmarks,
            sorted(sample.boxes.items()),
            # Only with --adjust-for, so that the digest of a run without it stays as it was.
            *([sorted(sample.covariates.items())] if sample.covariates else []),
        )
        digest.update(repr(described).encode())
    for skip in skips:
        digest.update(repr((skip.id, skip.reason)).encode())
    return digest.hexdigest()


def _faithfulness_sample(samples: Sequence[Sample], config: AuditConfig) -> frozenset[str]:
    """A seeded sample of image ids that get faithfulness curves (they cost ~50 forwards each)."""
    ids = sorted(s.id for s in samples)
    count = min(config.faithfulness_images, len(ids))
    chosen = np.random.default_rng(config.seed).choice(len(ids), size=count, replace=False)
    return frozenset(ids[i] for i in chosen)
