"""Faithfulness of attribution maps: which map to trust, measured on the audit's own images.

A map is faithful when the pixels it ranks highest are the ones the model's score depends on.
Three tests, each run for the method's map and for a random map on the same images, so that
every method is compared with chance rather than with a number that has no scale:

- Deletion and insertion (Petsiuk et al. 2018, RISE, https://arxiv.org/abs/1806.07421). Pixels
  are taken in the map's order, most relevant first, in ``steps`` equal fractions 0, 1/steps … 1.
  Deletion replaces them with a baseline image (P(target) should fall fast: lower AUC is better);
  insertion starts from the baseline and reveals them (P(target) should rise fast: higher AUC is
  better). AUC is the trapezoid rule over the fraction axis [0, 1].
- ROAD (Rong et al. 2022, https://arxiv.org/abs/2202.00449). At each percentile p the top p % of
  pixels (Most-Relevant-First, lower is better) or the bottom p % (Least-Relevant-First, higher is
  better) are imputed by noisy linear imputation, which fills them from their neighbours so the
  removal itself leaves no shape for the model to react to. The score is the mean P(target) over
  the percentiles. p is the percentage removed, as in the paper; pytorch-grad-cam's
  ``ROADMostRelevantFirst(percentile=p)`` instead removes the top 100 − p %, which gives the same
  mean over the symmetric default percentiles.

Choices:

- Baseline image: a Gaussian blur with sigma = ``BLUR_SIGMA_FRACTION`` × the shorter side (9.6 px
  at 96 × 96). It removes shapes and texture but keeps each region's mean colour, so the
  perturbation adds neither an out-of-distribution colour nor a hard edge (as a black or grey fill
  would) that the model could react to instead of the missing evidence.
- The random baseline is one smooth random map per image: uniform values on a
  ``RANDOM_MAP_CELLS`` × ``RANDOM_MAP_CELLS`` grid, bilinearly upsampled, so it removes
  contiguous blobs a quarter of the side across, as a CAM (a 3 × 3 to 7 × 7 feature map
  upsampled) or a 10 % edit region does. The comparison is then about where a map puts its mass,
  not about what kind of perturbation it makes: an i.i.d. pixel order removes a dither spread
  over the whole image, which the blur and ROAD's imputation fill back almost perfectly (on the
  demo model ROAD MoRF of an i.i.d. map scored 0.87 against 0.73 for the smooth one), so any
  contiguous map would look unfaithful on insertion and faithful on ROAD for its shape alone.
  The map is seeded by (seed, the image's bytes): an image's values do not depend on the batch
  it came in, and every method on an image is compared with the same random map. A random
  order read backwards is still a random order (1 − u is uniform too), so
  its deletion curve read backwards serves as its insertion curve, and removing its top p %
  serves for both ROAD orders: one random curve per test instead of two.
- Ties in a map (flat maps, flat regions) are broken in the random map's order, never by raster
  position, which would make a flat map "explain" whatever sits at the top of the image. Sharing
  the order (and the ROAD noise, per percentile) with the random map pairs the two runs closely:
  the difference then reflects only where the map carries information, and a flat map's deletion
  and MoRF values equal the random map's exactly.

Cost per image (scorer forwards): ``3 × (steps − 1) + 2`` for deletion, insertion and the random
curve (the original and the baseline are shared end points), plus ``3 × len(road_percentiles)``
ROAD images (MoRF, LeRF, random), each needing one sparse linear solve. With the defaults that is
47 + 15 = 62 forwards. Measured at 96 × 96 on a 2-core CPU with a scorer that costs nothing:
0.46 s per image (0.69 s with scipy's general ``spsolve``), nearly all of it imputation (about
30 ms per imputed image, more for higher percentiles). Nine percentiles (10 … 90) would cost
almost twice as much, hence five by default; their mean estimates the same average over the
removal range.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import cv2
import numpy as np
from scipy.integrate import trapezoid
from scipy.sparse import coo_matrix, csc_matrix
from scipy.sparse.linalg import splu
from scipy.stats import bootstrap

Scorer = Callable[[np.ndarray], np.ndarray]
"""uint8 images ``[N, H, W, 3]`` → class probabilities ``[N, C]``."""

Better = Literal["lower", "higher"]

METRICS: dict[str, Better] = {
    "deletion_auc": "lower",
    "insertion_auc": "higher",
    "road_morf": "lower",
    "road_lerf": "higher",
}
RANDOM = "random_"  # prefix of the random map's per-image values

DEFAULT_STEPS = 16
DEFAULT_ROAD_PERCENTILES = (10.0, 30.0, 50.0, 70.0, 90.0)
DEFAULT_IMAGES_PER_CALL = 8
BLUR_SIGMA_FRACTION = 0.1
# Added to imputed pixels on the [0, 1] scale (2.5 grey levels), so it survives rounding to uint8;
# the same default as NoisyLinearImputer, which is usually given normalised tensors instead.
ROAD_NOISE = 0.01
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 9999
SAME_VALUE_TOLERANCE = 1e-12
RANDOM_MAP_CELLS = 4
# Added to the upsampled random map so that it has no ties; far below any gap between two cells.
RANDOM_MAP_TIE_NOISE = 1e-6

_RANDOM_MAP, _NOISE = 0, 1  # independent random streams per image


@dataclass(frozen=True)
class FaithfulnessSummary:
    """One metric over images: the method, the random map, and their paired difference.

    ``beats_random`` is true when the 95 % interval of the paired difference (method − random)
    lies entirely on the ``better`` side of zero. Intervals are None with fewer than two images.
    """

    metric: str
    better: Better
    n_images: int
    method_mean: float
    method_ci: tuple[float, float] | None
    random_mean: float
    random_ci: tuple[float, float] | None
    difference: float
    difference_ci: tuple[float, float] | None
    beats_random: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaithfulnessResult:
    """Per-image values (see ``per_image``) with their summaries and the curves' x axes."""

    fractions: tuple[float, ...]
    road_percentiles: tuple[float, ...]
    per_image: dict[str, np.ndarray]
    summaries: list[FaithfulnessSummary]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and floats, ready for ``json.dump``."""
        return {
            "fractions": list(self.fractions),
            "road_percentiles": list(self.road_percentiles),
            "per_image": {key: values.tolist() for key, values in self.per_image.items()},
            "summaries": [summary.to_dict() for summary in self.summaries],
        }


def passes_per_image(
    steps: int = DEFAULT_STEPS, road_percentiles: Sequence[float] = DEFAULT_ROAD_PERCENTILES
) -> tuple[int, int]:
    """(scorer forwards, ROAD imputations) per image: what the cost estimate counts."""
    imputations = 3 * len(road_percentiles)
    return 3 * (steps - 1) + 2 + imputations, imputations


def evaluate(
    images: np.ndarray,
    maps: np.ndarray,
    targets: np.ndarray,
    scorer: Scorer,
    *,
    seed: int,
    steps: int = DEFAULT_STEPS,
    road_percentiles: Sequence[float] = DEFAULT_ROAD_PERCENTILES,
    images_per_call: int = DEFAULT_IMAGES_PER_CALL,
) -> FaithfulnessResult:
    """All faithfulness values and summaries for one set of images; see ``per_image``."""
    values = per_image(
        images,
        maps,
        targets,
        scorer,
        seed=seed,
        steps=steps,
        road_percentiles=road_percentiles,
        images_per_call=images_per_call,
    )
    return FaithfulnessResult(
        fractions=tuple(np.linspace(0.0, 1.0, steps + 1).tolist()),
        road_percentiles=tuple(float(p) for p in road_percentiles),
        per_image=values,
        summaries=summarise(values, seed=seed),
    )


def per_image(
    images: np.ndarray,
    maps: np.ndarray,
    targets: np.ndarray,
    scorer: Scorer,
    *,
    seed: int,
    steps: int = DEFAULT_STEPS,
    road_percentiles: Sequence[float] = DEFAULT_ROAD_PERCENTILES,
    images_per_call: int = DEFAULT_IMAGES_PER_CALL,
) -> dict[str, np.ndarray]:
    """Faithfulness values of each image's map, and of a random map on the same image.

    Call it per batch and ``concatenate`` the results before ``summarise``: values depend only on
    the image, its map, its target and the seed, not on the batch.

    Args:
        images: uint8 ``[N, H, W, 3]``.
        maps: attribution maps ``[N, H, W]``, higher meaning more relevant; any scale.
        targets: class index ``[N]`` whose probability is tracked.
        scorer: images → probabilities; called once per ``images_per_call`` images.
        seed: seeds tie-breaking, the random maps and the ROAD noise.
        steps: number of equal fractions in the deletion and insertion curves.
        road_percentiles: percentages of pixels removed, each strictly between 0 and 100.
        images_per_call: images whose perturbed versions go to the scorer together.

    Returns:
        ``[N]`` arrays under each name in ``METRICS`` and the same names prefixed with
        ``RANDOM``; ``[N, steps + 1]`` curves under ``deletion_curve``, ``insertion_curve``,
        ``random_deletion_curve``, ``random_insertion_curve``; ``[N, len(road_percentiles)]``
        under ``road_morf_curve``, ``road_lerf_curve``, ``random_road_curve``.

    Raises:
        ValueError: shapes or types that do not match, non-finite maps, bad parameters.
    """
    percentiles = np.asarray(road_percentiles, dtype=np.float64)
    _check(images, maps, targets, steps, percentiles, images_per_call)
    parts = [
        _chunk_values(
            images[start : start + images_per_call],
            maps[start : start + images_per_call],
            targets[start : start + images_per_call],
            scorer,
            seed,
            steps,
            percentiles,
        )
        for start in range(0, len(images), images_per_call)
    ]
    if not parts:
        layout = _image_values(np.zeros(3 * (steps - 1) + 2 + 3 * len(percentiles)), steps)
        return {key: values[None][:0] for key, values in layout.items()}
    return concatenate(parts)


def concatenate(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join per-image values of several batches along the image axis."""
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def summarise(
    per_image_values: Mapping[str, np.ndarray], *, seed: int
) -> list[FaithfulnessSummary]:
    """One summary per metric in ``METRICS``; empty when there are no images.

    Intervals are bootstrap BCa (``BOOTSTRAP_RESAMPLES`` resamples of images, seeded per metric):
    per-image AUCs are bounded and often skewed (deletion AUCs pile up near 0 for a confident
    model), and BCa corrects the percentile interval for that bias and skew. The difference is
    bootstrapped as one sample of per-image differences, because both maps ran on the same images.
    """
    summaries = []
    for metric, better in METRICS.items():
        method = np.asarray(per_image_values[metric], dtype=np.float64)
        if method.size == 0:
            return []
        random = np.asarray(per_image_values[RANDOM + metric], dtype=np.float64)
        difference = method - random
        difference_ci = mean_ci(difference, _bootstrap_rng(seed, metric))
        summaries.append(
            FaithfulnessSummary(
                metric=metric,
                better=better,
                n_images=int(method.size),
                method_mean=float(method.mean()),
                method_ci=mean_ci(method, _bootstrap_rng(seed, metric)),
                random_mean=float(random.mean()),
                random_ci=mean_ci(random, _bootstrap_rng(seed, metric)),
                difference=float(difference.mean()),
                difference_ci=difference_ci,
                beats_random=_beats(difference_ci, better),
            )
        )
    return summaries


def mean_ci(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float] | None:
    """BCa bootstrap interval of the mean; a point when all values agree, None below 2 values.

    Values that agree to within rounding are answered directly: BCa divides by their spread, so
    scipy warns and gives nan for them. Every value here is a probability or a difference of two.
    """
    if values.size < 2:
        return None
    if np.ptp(values) < SAME_VALUE_TOLERANCE:
        return float(values.mean()), float(values.mean())
    result = bootstrap(
        (values,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="BCa",
        rng=rng,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def blur_baseline(image: np.ndarray) -> np.ndarray:
    """The image with its content removed: a heavy Gaussian blur (see the module docstring)."""
    sigma = BLUR_SIGMA_FRACTION * min(image.shape[:2])
    return np.asarray(cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma))


def smooth_random_map(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """The random baseline's map (see the module docstring): smooth, uniform, without ties."""
    cells = rng.random((RANDOM_MAP_CELLS, RANDOM_MAP_CELLS))
    smooth = cv2.resize(cells, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return smooth + RANDOM_MAP_TIE_NOISE * rng.random(shape[:2])


def relevance_rank(saliency: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """Each pixel's position when ordered most relevant first (0 = first).

    Ties in ``saliency`` go in ``tie_break``'s order, higher first: never in raster order, which
    would make a flat map "explain" whatever sits at the top of the image.
    """
    order = np.lexsort(
        (
            -np.asarray(tie_break, dtype=np.float64).ravel(),
            -np.asarray(saliency, np.float64).ravel(),
        )
    )
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank.reshape(saliency.shape)


def impute(image: np.ndarray, keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ROAD's noisy linear imputation of the pixels outside ``keep``, on a uint8 ``[H, W, 3]``.

    Each removed pixel equals the weighted mean of its eight neighbours (pytorch-grad-cam's
    ``neighbors_weights``, as in the paper), which gives one sparse linear system over the removed
    pixels. The system is the one ``NoisyLinearImputer.setup_sparse_system`` builds; it is built
    here with array operations instead of a ``lil_matrix`` filled in Python (half the cost of an
    imputation there), and the noise is seeded per image instead of drawn from torch's global
    generator. The neighbour weights are symmetric, so is the system: SuperLU in its symmetric
    mode (diagonal pivots, a minimum-degree ordering of A + Aᵀ) solves it in 58 % of the time of
    the general ``spsolve``, to the same values within 1e-13 (15 imputations at 96 px).
    """
    if keep.all():
        return image.copy()
    channels = image.transpose(2, 0, 1).astype(np.float64) / 255.0
    system, rhs = _road_system(keep, channels.reshape(image.shape[2], -1))
    factor = splu(system, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    solution = factor.solve(rhs).reshape(-1, image.shape[2]).T
    flat = channels.reshape(image.shape[2], -1)
    flat[:, ~keep.ravel()] = solution + ROAD_NOISE * rng.standard_normal(solution.shape)
    return np.rint(np.clip(channels, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)


def _road_system(keep: np.ndarray, values: np.ndarray) -> tuple[csc_matrix, np.ndarray]:
    """The linear system of :func:`impute`: one equation per removed pixel.

    ``values`` is ``[C, H·W]``. Row i reads ``Σ_j w_j·x_j − (Σ_j w_j)·x_i = 0`` over the
    neighbours j inside the image; neighbours that were kept move to the right-hand side.
    """
    # Imported here: pytorch-grad-cam imports torch, and the readers of a run import this module.
    from pytorch_grad_cam.metrics.road import neighbors_weights

    height, width = keep.shape
    removed = np.flatnonzero(~keep.ravel())
    variable = np.full(keep.size, -1)
    variable[removed] = np.arange(removed.size)
    rows_y, rows_x = np.divmod(removed, width)
    weight_sum = np.zeros(removed.size)
    rhs = np.zeros((removed.size, values.shape[0]))
    rows, cols, data = [], [], []
    for (dy, dx), weight in neighbors_weights:
        y, x = rows_y + dy, rows_x + dx
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        neighbour = np.where(inside, y * width + x, 0)
        weight_sum += weight * inside
        known = inside & keep.ravel()[neighbour]
        rhs[known] -= weight * values[:, neighbour[known]].T
        unknown = inside & ~known
        rows.append(np.flatnonzero(unknown))
        cols.append(variable[neighbour[unknown]])
        data.append(np.full(int(unknown.sum()), weight))
    diagonal = np.arange(removed.size)
    system = coo_matrix(
        (
            np.concatenate([*data, -weight_sum]),
            (np.concatenate([*rows, diagonal]), np.concatenate([*cols, diagonal])),
        ),
        shape=(removed.size, removed.size),
    )
    return system.tocsc(), rhs


def _check(
    images: np.ndarray,
    maps: np.ndarray,
    targets: np.ndarray,
    steps: int,
    percentiles: np.ndarray,
    images_per_call: int,
) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if maps.shape != images.shape[:3]:
        raise ValueError(f"maps must be [N, H, W] = {images.shape[:3]}, got {maps.shape}")
    if not np.isfinite(maps).all():
        raise ValueError("maps contain NaN or infinity; skip those images before calling")
    if targets.shape != images.shape[:1] or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be integer [N] = {images.shape[:1]}, got {targets.shape}")
    if steps < 1 or images_per_call < 1:
        raise ValueError(f"steps and images_per_call must be >= 1, got {steps}, {images_per_call}")
    if percentiles.size == 0 or not ((percentiles > 0) & (percentiles < 100)).all():
        raise ValueError(f"road_percentiles must be given, strictly in (0, 100): {percentiles}")


def _chunk_values(
    images: np.ndarray,
    maps: np.ndarray,
    targets: np.ndarray,
    scorer: Scorer,
    seed: int,
    steps: int,
    percentiles: np.ndarray,
) -> dict[str, np.ndarray]:
    """Values for a few images from one scorer call over all their perturbed versions."""
    stacks = [
        _perturbed(image, saliency, seed, steps, percentiles)
        for image, saliency in zip(images, maps, strict=True)
    ]
    batch = np.concatenate(stacks)
    probabilities = np.asarray(scorer(batch))
    if probabilities.ndim != 2 or probabilities.shape[0] != len(batch):
        raise ValueError(f"scorer returned {probabilities.shape} for {len(batch)} images")
    if targets.min() < 0 or targets.max() >= probabilities.shape[1]:
        raise ValueError(f"targets must lie in [0, {probabilities.shape[1]}), got {targets}")
    scores = probabilities.reshape(len(stacks), len(stacks[0]), -1)
    values = [_image_values(scores[i, :, target], steps) for i, target in enumerate(targets)]
    return {key: np.stack([v[key] for v in values]) for key in values[0]}


def _perturbed(
    image: np.ndarray, saliency: np.ndarray, seed: int, steps: int, percentiles: np.ndarray
) -> np.ndarray:
    """Every perturbed version of one image to score, in the order ``_image_values`` reads.

    Original, baseline; deletion, insertion and random deletion at the fractions strictly between
    0 and 1; ROAD MoRF, LeRF and random at each percentile.
    """
    baseline = blur_baseline(image)
    random_map = smooth_random_map(saliency.shape, _image_rng(seed, image, _RANDOM_MAP))
    rank = relevance_rank(saliency, tie_break=random_map)
    random_rank = relevance_rank(random_map, tie_break=random_map)  # no ties to break
    pixels = rank.size
    inner = np.rint(np.arange(1, steps) / steps * pixels).astype(np.int64)
    removed = np.minimum(np.rint(percentiles / 100 * pixels).astype(np.int64), pixels - 1)

    def road(keep: Callable[[int], np.ndarray]) -> np.ndarray:
        return np.stack(
            [
                impute(image, keep(k), _image_rng(seed, image, _NOISE, i))
                for i, k in enumerate(removed)
            ]
        )

    return np.concatenate(
        [
            image[None],
            baseline[None],
            _first_from(rank, inner, baseline, image),
            _first_from(rank, inner, image, baseline),
            _first_from(random_rank, inner, baseline, image),
            road(lambda k: rank >= k),
            road(lambda k: rank < pixels - k),
            road(lambda k: random_rank >= k),
        ]
    )


def _first_from(
    rank: np.ndarray, counts: np.ndarray, first: np.ndarray, rest: np.ndarray
) -> np.ndarray:
    """For each count k, ``first`` on the k highest-ranked pixels and ``rest`` elsewhere."""
    chosen = rank[None] < counts[:, None, None]
    return np.where(chosen[..., None], first[None], rest[None])


def _image_values(scores: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """Curves and AUCs of one image from P(target) of its ``_perturbed`` images."""
    original, baseline = scores[:2]
    inner = steps - 1
    deletion, insertion, random, road = np.split(scores[2:], [inner, 2 * inner, 3 * inner])
    morf, lerf, random_road = road.reshape(3, -1)
    curves = {
        "deletion_curve": np.concatenate([[original], deletion, [baseline]]),
        "insertion_curve": np.concatenate([[baseline], insertion, [original]]),
        "random_deletion_curve": np.concatenate([[original], random, [baseline]]),
    }
    curves["random_insertion_curve"] = curves["random_deletion_curve"][::-1]
    fractions = np.linspace(0.0, 1.0, steps + 1)
    aucs = {
        f"{prefix}{test}_auc": np.asarray(trapezoid(curves[f"{prefix}{test}_curve"], fractions))
        for prefix in ("", RANDOM)
        for test in ("deletion", "insertion")
    }
    return {
        **aucs,
        "road_morf": morf.mean(),
        "road_lerf": lerf.mean(),
        RANDOM + "road_morf": random_road.mean(),
        RANDOM + "road_lerf": random_road.mean(),
        **curves,
        "road_morf_curve": morf,
        "road_lerf_curve": lerf,
        "random_road_curve": random_road,
    }


def _image_rng(seed: int, image: np.ndarray, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(image.tobytes()), *stream])


def _bootstrap_rng(seed: int, metric: str) -> np.random.Generator:
    """The same resamples of images for the method, the random map and their difference."""
    return np.random.default_rng([seed, zlib.crc32(metric.encode())])


def _beats(difference_ci: tuple[float, float] | None, better: Better) -> bool:
    if difference_ci is None:
        return False
    return difference_ci[1] < 0 if better == "lower" else difference_ci[0] > 0
