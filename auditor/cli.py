"""The ``audit`` command. Thin: parse, build a config, call the pipeline, map to an exit code.

Exit codes: 0 the audit ran (and its policy, if one was given, holds); 1 the policy fails (for
``audit hypothesis``: the verdict differs from the spec's ``expect``); 2 usage or input error
(one line says what to do); 3 an internal error (a bug in auditor: rerun with ``--debug`` for
the traceback). Human output and progress go to stderr; stdout stays free for ``--json``.
Colour and live progress appear only on a terminal; a CI log gets plain lines.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from auditor import __version__
from auditor.errors import AuditorError

if TYPE_CHECKING:  # imported lazily below: `audit --help` must not wait for torch
    from auditor.demo import DemoWorld
    from auditor.executors import Execution
    from auditor.policy import Policy, Verdict
    from auditor.run_summary import RunSummary
    from reports.images import ReportImages

EXIT_OK, EXIT_POLICY, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)


def _split(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


# OS errors that are the machine's or the user's paths' fault, not auditor's: what to do.
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "free some space, or choose another output directory",
    errno.EDQUOT: "free some of your disk quota, or choose another output directory",
    errno.EFBIG: "choose an output directory on a file system that takes larger files",
    errno.EROFS: "choose an output directory on a writable file system",
    errno.EACCES: "check its permissions, or choose another output directory",
    errno.EPERM: "check its permissions, or choose another output directory",
    errno.ENOTDIR: "a part of that path is a file, not a directory: choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
}
# Keys of click's context.meta: the output directory a command writes, for messages.
OUT_DIR_META = "auditor.out_dir"


def handles_errors(command: F) -> F:
    """Turn domain and environment errors into exit 2 with one clear line, bugs into exit 3.

    Environment errors are an OSError such as ENOSPC, EROFS or EACCES raised anywhere during
    the command (or the cause of what was raised), and running out of memory.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return command(*args, **kwargs)
        except AuditorError as exc:
            _print_error(str(exc))  # printed literally: messages quote user input
            ctx.exit(EXIT_INPUT)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            environment = _environment_error(exc, ctx)
            if environment is not None:
                _print_error(environment)
                ctx.exit(EXIT_INPUT)
            if ctx.find_root().params.get("debug"):
                raise
            _print_error(
                f"{exc.__class__.__name__}: {exc}\nThis is a bug in auditor, not in your input. "
                f"Rerun with `audit --debug {ctx.info_name} ...` to see the traceback, and "
                "report it.",
                label="internal error:",
            )
            ctx.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


def _print_error(message: str, label: str = "error:") -> None:
    """``label message`` on stderr, the message as plain text (never read as markup)."""
    console.print(Text.assemble((label, "bold red"), " ", message), highlight=False, soft_wrap=True)


def _environment_error(exc: BaseException, ctx: click.Context) -> str | None:
    """The one-line message for an error of the machine or of the user's paths, else None.

    Looks at ``exc`` and the exceptions it was raised from (its cause and context chain).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _ENVIRONMENT_ERRNOS:
            path = current.filename or current.filename2 or ctx.meta.get(OUT_DIR_META)
            where = f"{os.fsdecode(path)}" if path is not None else "the output directory"
            verb = "access" if current.errno in (errno.EACCES, errno.EPERM) else "write"
            return (
                f"cannot {verb} {where}: {os.strerror(current.errno)}; "
                f"{_ENVIRONMENT_ERRNOS[current.errno]}"
            )
        if _out_of_memory(current):
            return (
                f"out of memory ({current.__class__.__name__}: {str(current)[:200]}); lower "
                "--batch-size (and --attribution-batch-size), or use a device with more memory"
            )
        current = current.__cause__ or current.__context__
    return None


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # only loaded torch can have raised its error
    memory_error = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return isinstance(memory_error, type) and isinstance(exc, memory_error)


def _run_dir(path: Path) -> Path:
    """``path``, where a run directory can be made: not a file, nor under one.

    Also noted in the context, so that a failed write names the directory.
    """
    for place in (path, *path.parents):
        if place.exists() or place.is_symlink():
            if not place.is_dir():
                what = "is" if place == path else f"is under {place}, which is"
                raise AuditorError(
                    f"output directory {path} {what} a file, not a directory: pass --out a "
                    "directory (it is created if missing)"
                )
            break
    click.get_current_context().meta[OUT_DIR_META] = path
    return path


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditor")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def cli(debug: bool) -> None:
    """Adversarial occlusion and bias audits of PyTorch image classifiers."""


def audit_options(command: F) -> F:
    """The options shared by every command that runs an audit.

    All but ``--json`` are AuditConfig fields of the same name, passed on as ``**shared``.
    """
    options = [
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed for placebo regions and Monte Carlo tests.",
        ),
        click.option(
            "--alpha",
            type=float,
            default=0.05,
            show_default=True,
            help="Significance level (after Holm correction).",
        ),
        click.option(
            "--mcnemar",
            type=click.Choice(["exact", "mid-p"]),
            default="exact",
            show_default=True,
            help="Guided-vs-placebo test: exact McNemar, or its mid-p version (less "
            "conservative; its size can exceed α slightly).",
        ),
        click.option(
            "--min-group-size",
            type=int,
            default=10,
            show_default=True,
            help="Smaller subgroups are shown but not tested.",
        ),
        click.option("--batch-size", type=int, default=32, show_default=True),
        click.option(
            "--device", default=None, help="torch device (default: cuda if available, else cpu)."
        ),
        click.option(
            "--json", "as_json", is_flag=True, help="Print summary.json to stdout at the end."
        ),
    ]
    return _with_options(options, command)


def _with_options(options: Sequence[Callable[[Any], Any]], command: F) -> F:
    """``command`` decorated with ``options``, the first listed first in ``--help``."""
    for option in reversed(options):
        command = option(command)
    return command


META_FLAGS = ("arch", "classes", "input_size", "mean", "std", "target_layer")


def execution_options(command: F) -> F:
    """Where the batches run (``--engine``, ``--workers``, ``--ray-address``) and what to do
    with an --out that already holds a run (``--resume`` it or ``--overwrite`` it); the command
    receives them as one :class:`auditor.executors.Execution`, ``execution``."""

    @functools.wraps(command)
    def with_execution(
        *args: Any,
        engine: str,
        workers: int | None,
        ray_address: str | None,
        resume: bool,
        overwrite: bool,
        **kwargs: Any,
    ) -> Any:
        from auditor.executors import Execution

        if resume and overwrite:
            raise click.UsageError("--resume and --overwrite exclude each other")
        execution = Execution(engine, workers, ray_address, resume=resume, overwrite=overwrite)
        return command(*args, execution=execution, **kwargs)

    options = [
        click.option(
            "--resume",
            is_flag=True,
            help="Continue an interrupted run in --out: only the batches it has not stored "
            "run (the model, labels and options must be those it was started with).",
        ),
        click.option(
            "--overwrite",
            is_flag=True,
            help="Replace the run already in --out (other files stay).",
        ),
        click.option(
            "--engine",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            help="Where batches run: this process, or Ray actors (pip install 'auditor[ray]').",
        ),
        click.option(
            "--workers",
            type=int,
            default=None,
            help="Ray actors, each with its own copy of the model [default: 2].",
        ),
        click.option(
            "--ray-address",
            default=None,
            help="Ray cluster to join (e.g. ray://head:10001) [default: start a local one].",
        ),
    ]
    return _with_options(options, cast(F, with_execution))


def model_options(command: F) -> F:
    """How to load the model: metadata overrides, its config file, and trusting a pickle.

    The flags named in META_FLAGS override the metadata key of the same name; the command
    receives them as one ``meta_overrides`` dict, beside ``model_config`` and ``trust_model``.
    """

    @functools.wraps(command)
    def with_overrides(*args: Any, **kwargs: Any) -> Any:
        overrides = {name: kwargs.pop(name) for name in META_FLAGS}
        return command(*args, meta_overrides=overrides, **kwargs)

    options = [
        click.option(
            "--arch",
            default=None,
            help="Architecture of a state_dict: a timm name, torchvision:NAME, or your own "
            "path/to/model.py:Class or package.module:factory (its code runs; keyword "
            "arguments from 'arch_kwargs' in the model metadata).",
        ),
        click.option(
            "--classes", default=None, help="Class names in output order, comma-separated."
        ),
        click.option("--input-size", default=None, help="Model input size: N or H,W."),
        click.option(
            "--mean", default=None, help="Normalisation mean, three comma-separated numbers."
        ),
        click.option(
            "--std", default=None, help="Normalisation std, three comma-separated numbers."
        ),
        click.option("--target-layer", default=None, help="Dotted module path of the CAM layer."),
        click.option(
            "--model-config",
            type=click.Path(path_type=Path),
            default=None,
            help="Model metadata JSON [default: <model>.json or model.json beside the model].",
        ),
        click.option(
            "--trust-model",
            is_flag=True,
            help="Allow loading a pickled nn.Module (runs code from the file).",
        ),
    ]
    return _with_options(options, cast(F, with_overrides))


def report_images_option(command: F) -> F:
    """``--report-images``: what the HTML report may show of the audited photos."""
    from reports.images import DEFAULT_REPORT_IMAGES, REPORT_IMAGES

    return click.option(
        "--report-images",
        type=click.Choice(REPORT_IMAGES),
        default=DEFAULT_REPORT_IMAGES,
        show_default=True,
        help="Photos in the report: as audited, blurred beyond recognition, or none at all.",
    )(command)


def policy_options(command: F) -> F:
    """``--policy``, ``--fail-on`` and ``--junit-xml``: what gates a release on a run."""
    options = [
        click.option(
            "--policy",
            "policy_path",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Policy file: audit.toml, or a pyproject.toml with [tool.audit] "
            "[default: either, found in the current directory].",
        ),
        click.option(
            "--fail-on",
            multiple=True,
            help="A gate, repeatable, e.g. 'flip_rate_gap[blackout] > 0.1', 'error_rate_gap > "
            "0.05', 'flip_rate > 0.3'; adds to (and wins over) the policy file.",
        ),
        click.option(
            "--require",
            type=click.Choice(("significance", "estimate", "equivalence")),
            default=None,
            help="What the gates need, winning over the policy file's `require`: significance "
            "(a gap fails only when significant; the default), estimate (point estimates) or "
            "equivalence (a gate passes only when the data rule a violation out; else "
            "insufficient data).",
        ),
        click.option(
            "--junit-xml",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Write the policy verdict as JUnit XML: one test case per gate and subgroup.",
        ),
    ]
    return _with_options(options, command)


@cli.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path), metavar="[MODEL] DATASET")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Run directory [default: runs/<model name>].",
)
@click.option(
    "--predict",
    default=None,
    help="Audit a black box instead of a MODEL file: package.module:function or "
    "path/to/file.py:function, taking uint8 images [N, H, W, 3] and returning probabilities "
    "[N, classes] (give --classes and --input-size).",
)
@model_options
@click.option("--label-column", default="label", show_default=True)
@click.option(
    "--label-source",
    default=None,
    help="Who assigned the labels (e.g. 'FairFace annotators'), stated in the report.",
)
@click.option(
    "--group-columns",
    default=None,
    help="Subgroup columns, comma-separated [default: gender,race where present].",
)
@click.option(
    "--adjust-for",
    default=None,
    metavar="COLUMN[,COLUMN]",
    help="labels.csv columns (e.g. age, image quality) that may explain an error-rate gap: each "
    "gap is also reported as the odds ratio of its highest- vs lowest-error subgroup from a "
    "logistic model with them (numbers linear, other values categorical), with the "
    "likelihood-ratio test of the subgroups; images missing one are left out and counted.",
)
@click.option(
    "--method",
    "methods",
    default=None,
    help="Attribution method(s), comma-separated; each places its own regions and becomes a "
    "dimension of the results. CAMs: gradcam (default), gradcam++, xgradcam, hirescam, "
    "gradcam-elementwise, layercam, eigencam, eigengradcam, scorecam, ablationcam; captum: "
    "integrated_gradients (the default for TorchScript), saliency, input_x_gradient, smoothgrad, "
    "guided_gradcam, occlusion, feature_ablation, lime, kernel_shap; rise (the default for "
    "black boxes). `audit methods` lists all with their cost and needs.",
)
@click.option(
    "--ig-steps", type=int, default=32, show_default=True, help="Integrated Gradients path steps."
)
@click.option(
    "--samples",
    type=int,
    default=64,
    show_default=True,
    help="Perturbed samples per image for lime and kernel_shap.",
)
@click.option(
    "--rise-masks",
    type=int,
    default=256,
    show_default=True,
    help="Random masks per image for rise.",
)
@click.option(
    "--superpixels",
    type=int,
    default=50,
    show_default=True,
    help="SLIC segments per image for feature_ablation, lime and kernel_shap.",
)
@click.option(
    "--attribution-batch-size",
    type=int,
    default=64,
    show_default=True,
    help="Forward passes evaluated together by methods that make many (bounds memory).",
)
@click.option(
    "--target-index",
    default=None,
    help="Multi-label head: the output to audit, by index or attribute name.",
)
@click.option(
    "--faithfulness-images",
    type=int,
    default=50,
    show_default=True,
    help="Images (a seeded sample) that get deletion/insertion/ROAD curves per method; 0: none.",
)
@click.option(
    "--target",
    default="predicted",
    show_default=True,
    help="Class to attribute: predicted, true or a class name.",
)
@click.option(
    "--probes",
    default=None,
    help="Probes to run, comma-separated, with arguments: 'blackout(fill=inpaint),blur(sigma=8)' "
    "[default: blackout,blackout(fill=inpaint),white_patch,flip,hair_crop; also blur, noise, "
    "grayscale].",
)
@click.option(
    "--region-area",
    type=float,
    default=0.10,
    show_default=True,
    help="Edit region size as a fraction of the image.",
)
@click.option(
    "--cues/--no-cues",
    default=True,
    show_default=True,
    help="After the run, cluster the misclassified images' attribution regions into candidate "
    "cues (what the model keys on), each tested by removing it vs a random region; "
    "writes cues.parquet and cues.json.",
)
@execution_options
@audit_options
@report_images_option
@policy_options
@handles_errors
def run(
    inputs: tuple[Path, ...],
    out_dir: Path | None,
    predict: str | None,
    meta_overrides: dict[str, str | None],
    model_config: Path | None,
    trust_model: bool,
    label_column: str,
    label_source: str | None,
    group_columns: str | None,
    adjust_for: str | None,
    methods: str | None,
    ig_steps: int,
    samples: int,
    rise_masks: int,
    superpixels: int,
    attribution_batch_size: int,
    target_index: str | None,
    faithfulness_images: int,
    target: str,
    probes: str | None,
    region_area: float,
    cues: bool,
    as_json: bool,
    policy_path: Path | None,
    fail_on: tuple[str, ...],
    require: str | None,
    junit_xml: Path | None,
    report_images: str,
    execution: Execution,
    **shared: Any,
) -> None:
    """Audit MODEL on the images in DATASET; with a policy, exit 1 when it fails.

    MODEL is a state_dict or .safetensors (with --arch), a torch.export .pt2, a TorchScript
    archive or an .onnx file; or leave it out and name a prediction function with --predict.
    """
    from auditor.attribution import AttributionOptions
    from auditor.config import AuditConfig, probe_specs
    from auditor.policy import load_policy

    model, dataset = _model_and_dataset(inputs, predict)

    policy = load_policy(policy_path, fail_on, require=require)  # a bad one stops the run
    if policy is None and junit_xml is not None:
        raise AuditorError("--junit-xml needs a policy: --policy FILE or --fail-on EXPRESSION")
    shared |= _policy_settings(policy, shared["alpha"], shared["min_group_size"])

    out = _run_dir(out_dir or Path("runs") / _run_name(model, predict))
    config = AuditConfig(
        model_path=model,
        dataset_dir=dataset,
        out_dir=out,
        predict=predict,
        model_config=model_config,
        meta_overrides={**meta_overrides, "target_index": target_index},
        trust_model=trust_model,
        label_column=label_column,
        label_source=label_source,
        group_columns=_split(group_columns),
        adjust_for=_split(adjust_for) or (),
        methods=_split(methods) or (),
        attribution=AttributionOptions(
            ig_steps=ig_steps,
            samples=samples,
            rise_masks=rise_masks,
            superpixels=superpixels,
            internal_batch_size=attribution_batch_size,
        ),
        faithfulness_images=faithfulness_images,
        target=target,
        probes=probe_specs(probes),
        region_area=region_area,
        cues=cues,
        **shared,
    )
    run_dir, verdict = _audit_and_report(config, as_json, report_images, execution, policy)
    if verdict is not None:
        _report_verdict(verdict, run_dir, junit_xml)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@policy_options
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON to stdout.")
@handles_errors
def gate(
    run_dir: Path,
    policy_path: Path | None,
    fail_on: tuple[str, ...],
    require: str | None,
    junit_xml: Path | None,
    as_json: bool,
) -> None:
    """Judge the stored results in RUN_DIR against a policy; exit 1 when it fails.

    Needs no model: the statistics are recomputed from RUN_DIR/results.parquet, so the verdict
    equals that of `audit run --policy` with the same policy.
    """
    from auditor.policy import judge_run, load_policy
    from reports.html import REPORT_FILE

    _require_run(run_dir)
    policy = load_policy(policy_path, fail_on, require=require)
    if policy is None:
        raise AuditorError(
            "no policy: pass --policy FILE or --fail-on EXPRESSION, or put audit.toml (or "
            "[tool.audit] in pyproject.toml) in the current directory"
        )
    verdict = judge_run(run_dir, policy)
    if as_json:
        click.echo(json.dumps(verdict.to_json(), indent=2))
    _store_verdict(verdict, run_dir)
    if (run_dir / REPORT_FILE).is_file():  # written before this verdict: it shows an older one
        console.print(
            f"Report:  `audit report {run_dir} --overwrite` re-renders it with this verdict on its "
            "first screen.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    _report_verdict(verdict, run_dir, junit_xml)


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
)
@audit_options
@report_images_option
@handles_errors
def demo(out_dir: Path, as_json: bool, report_images: str, **shared: Any) -> None:
    """Build the synthetic portrait world, train a biased and a control model, audit both.

    Each run is also judged against the demo's policy (auditor/demo/audit.toml), which the
    biased model fails; the demo still exits 0, as it ran as intended.
    """
    from auditor.config import AuditConfig
    from auditor.demo import DEMO_LABEL_SOURCE, DEMO_POLICY
    from auditor.executors import Execution
    from auditor.policy import load_policy

    policy = load_policy(DEMO_POLICY)
    assert policy is not None  # shipped with the package
    _run_dir(out_dir)

    world = _build_demo_world(out_dir, shared["seed"])
    for name, model in (("biased", world.biased_model), ("control", world.control_model)):
        console.rule(f"{name} model")
        config = AuditConfig(
            model_path=model,
            dataset_dir=world.audit_dir,
            out_dir=out_dir / name,
            label_column="gender",
            label_source=DEMO_LABEL_SOURCE,
            **shared,
        )
        # The demo owns its directory: a second demo replaces the first one's runs.
        execution = Execution(overwrite=True)
        run_dir, verdict = _audit_and_report(config, as_json, report_images, execution, policy)
        assert verdict is not None  # judged by the demo's policy
        _report_verdict(verdict, run_dir, None, exit_on_failure=False)


def _build_demo_world(out_dir: Path, seed: int) -> DemoWorld:
    """Build (or reuse) the demo world, with a bar and an ETA per model it trains."""
    from rich.progress import (
        BarColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from auditor.demo import build_demo
    from auditor.demo.train import TrainingProgress

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[steps]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        # Shown (and timed afresh) whenever no model is training: before, between and after.
        generating = bar.add_task("generating the demo world's images", total=None, steps="")
        training: dict[str, TaskID] = {}

        def show(model_name: str, state: TrainingProgress) -> None:
            if model_name not in training:
                bar.update(generating, visible=False)
                training[model_name] = bar.add_task(
                    f"training {model_name} model", total=state.steps, steps=""
                )
            steps = f"{state.steps_done}/{state.steps} steps"
            bar.update(training[model_name], completed=state.steps_done, steps=steps)
            if state.steps_done == state.steps:
                bar.reset(generating, visible=True)

        world = build_demo(out_dir, seed=seed, progress=show)
        bar.remove_task(generating)
    return world


@cli.command()
@handles_errors
def methods() -> None:
    """List every attribution method: family, passes per image (224 px), what it needs."""
    from rich.table import Table

    from auditor.attribution import ATTRIBUTORS, LayerMethod, passes_per_image

    table = Table(title="Attribution methods (--method)")
    for column in ("method", "family", "passes per image", "needs"):
        table.add_column(column)
    for name, method in ATTRIBUTORS.items():
        family = "layer (CAM)" if isinstance(method, LayerMethod) else "input pixels"
        try:
            passes = str(passes_per_image(name))
        except AuditorError:  # ScoreCAM-like: one pass per channel of the model's layer
            passes = "1 per layer channel"
        needs = ", ".join(
            need
            for need, yes in (("layer hooks", method.hooks), ("gradients", method.gradients))
            if yes
        )
        table.add_row(name, family, passes, needs or "forward passes only (black boxes too)")
    console.print(table)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@report_images_option
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the report to this file (replaced if it exists) [default: RUN_DIR/report.html].",
)
@click.option("--overwrite", is_flag=True, help="Replace RUN_DIR/report.html if it exists.")
@handles_errors
def report(run_dir: Path, report_images: str, out_path: Path | None, overwrite: bool) -> None:
    """Re-render RUN_DIR's report from stored results, without the model.

    The report already in RUN_DIR (`audit run` wrote it) is kept unless --overwrite: write another
    rendering, e.g. with other --report-images, to --out PATH.
    """
    from reports import render_report
    from reports.html import REPORT_FILE

    _require_run(run_dir)
    target = out_path or run_dir / REPORT_FILE
    if out_path is None and target.exists() and not overwrite:
        raise AuditorError(
            f"{target} already exists; pass --out PATH to write this rendering elsewhere, "
            "or --overwrite to replace it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    click.get_current_context().meta[OUT_DIR_META] = target.parent
    page = render_report(run_dir, _images(report_images), target)
    console.print(f"Report: {page}", highlight=False, markup=False)


@cli.command()
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Output directory [default: runs/hypothesis-<spec file name>].",
)
@model_options
@click.option("--label-column", default="label", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu).")
@click.option("--json", "as_json", is_flag=True, help="Print hypothesis.json to stdout.")
@report_images_option
@execution_options
@handles_errors
def hypothesis(
    spec: Path,
    model: Path,
    dataset: Path,
    out_dir: Path | None,
    meta_overrides: dict[str, str | None],
    model_config: Path | None,
    trust_model: bool,
    label_column: str,
    batch_size: int,
    device: str | None,
    as_json: bool,
    report_images: str,
    execution: Execution,
) -> None:
    """Test the claim in SPEC (a TOML file) on MODEL and DATASET against its control.

    Exits 0 when the test ran, whatever its verdict; 1 when SPEC states `expect` and the verdict
    differs (so shipped examples and CI checks fail loudly); 2 on a usage or input error.
    """
    from auditor.hypothesis import RunOptions, load_spec, run_hypothesis
    from auditor.hypothesis.document import read_hypothesis
    from auditor.hypothesis.files import HYPOTHESIS_FILE
    from reports.hypothesis import expectation_text, headline, render_hypothesis

    parsed = load_spec(spec)  # a bad spec stops before the model is loaded
    options = RunOptions(
        model_path=model,
        dataset_dir=dataset,
        out_dir=_run_dir(out_dir or Path("runs") / f"hypothesis-{spec.stem}"),
        label_column=label_column,
        model_config=model_config,
        meta_overrides=meta_overrides,
        trust_model=trust_model,
        batch_size=batch_size,
        device=device,
    )
    with console.status(f"Testing '{escape(parsed.name)}'..."):  # a user's name: not markup
        result = run_hypothesis(parsed, options, execution)
    page = render_hypothesis(result.out_dir, _images(report_images))
    document = read_hypothesis(result.out_dir)
    console.print(
        headline(document),
        expectation_text(document),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"Results: {result.out_dir / HYPOTHESIS_FILE}\nReport:  {page}",
        highlight=False,
        markup=False,
    )
    if as_json:
        click.echo((result.out_dir / HYPOTHESIS_FILE).read_text(encoding="utf-8"), nl=False)
    if result.expectation_met is False:  # the spec's `expect` is its policy
        click.get_current_context().exit(EXIT_POLICY)


@cli.command()
@click.argument("run_a", type=click.Path(path_type=Path, file_okay=False))
@click.argument("run_b", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where comparison.json and comparison.html go [default: RUN_B/compare-<RUN_A name>].",
)
@click.option(
    "--alpha",
    type=float,
    default=0.05,
    show_default=True,
    help="Significance level (after Holm correction).",
)
@click.option(
    "--min-group-size",
    type=int,
    default=10,
    show_default=True,
    help="Smaller subgroups are reported as insufficient data, not tested.",
)
@policy_options
@click.option("--json", "as_json", is_flag=True, help="Print comparison.json to stdout.")
@handles_errors
def compare(
    run_a: Path,
    run_b: Path,
    out_dir: Path | None,
    alpha: float,
    min_group_size: int,
    policy_path: Path | None,
    fail_on: tuple[str, ...],
    require: str | None,
    junit_xml: Path | None,
    as_json: bool,
) -> None:
    """Compare two audits of the same images: where is model B worse than model A?

    RUN_A is the baseline (e.g. the current model), RUN_B the candidate: the --out directories
    of two `audit run`s on the same dataset. Needs no model. With a policy that sets
    max_regression (e.g. --fail-on 'regression > 0'), exit 1 when B is worse than allowed.
    """
    from auditor.compare import compare_runs, read_comparison, write_comparison
    from auditor.policy import judge_comparison, load_policy
    from auditor.store import SUMMARY_FILE
    from reports.comparison import headline, render_comparison

    policy = load_policy(policy_path, fail_on, command="compare", require=require)
    if policy is None and junit_xml is not None:
        raise AuditorError("--junit-xml needs a policy: --policy FILE or --fail-on EXPRESSION")
    comparison = compare_runs(run_a, run_b, **_policy_settings(policy, alpha, min_group_size))
    out = _run_dir(out_dir or run_b / f"compare-{run_a.resolve().name}")
    if (out / SUMMARY_FILE).is_file():  # its gate.json is the run's own verdict
        raise AuditorError(
            f"--out {out} holds an audit run, whose gate.json and report this comparison would "
            "overwrite: pass --out a directory of its own (default: RUN_B/compare-<RUN_A>)"
        )
    json_path = write_comparison(comparison, out)
    html_path = render_comparison(out)
    data = read_comparison(out)
    for line in headline(data):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(
        f"Comparison: {json_path}\nReport:     {html_path}", highlight=False, markup=False
    )
    if as_json:
        click.echo(json_path.read_text(encoding="utf-8"), nl=False)
    if policy is not None:
        verdict = judge_comparison(comparison, policy)
        _store_verdict(verdict, out)
        _report_verdict(verdict, out, junit_xml)


def _model_and_dataset(inputs: tuple[Path, ...], predict: str | None) -> tuple[Path | None, Path]:
    """``MODEL DATASET``, or ``DATASET`` alone with ``--predict``."""
    wanted = 1 if predict else 2
    if len(inputs) != wanted:
        usage = (
            "audit run --predict MODULE:FUNCTION DATASET"
            if predict
            else ("audit run MODEL DATASET (or audit run --predict MODULE:FUNCTION DATASET)")
        )
        raise click.UsageError(f"expected {wanted} path(s), got {len(inputs)}: {usage}")
    return (None, inputs[0]) if predict else (inputs[0], inputs[1])


def _run_name(model: Path | None, predict: str | None) -> str:
    """The default run directory's name: the model file's stem, or the function's name."""
    return model.stem if model is not None else (predict or "model").rpartition(":")[2]


def _require_run(run_dir: Path) -> None:
    """Refuse a directory that holds no finished run (the store's message says why)."""
    from auditor.store import RunStore

    RunStore.open(run_dir)


def _images(choice: str) -> ReportImages:
    """The --report-images choice, typed: click has checked it is one of REPORT_IMAGES."""
    return cast("ReportImages", choice)


def _audit_and_report(
    config: Any, as_json: bool, report_images: str, execution: Execution, policy: Policy | None
) -> tuple[Path, Verdict | None]:
    """Run the audit, judge it against ``policy`` (if any), then write the report, whose first
    screen shows the verdict stored in gate.json; print the findings. Returns the run
    directory and the verdict."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from auditor.pipeline import RunProgress, run_audit
    from auditor.policy import judge_run
    from auditor.store import SUMMARY_FILE, RunStore
    from reports import render_report

    with Progress(
        TextColumn("auditing"),
        BarColumn(),
        TextColumn("batch {task.completed}/{task.total}  {task.fields[speed]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("audit", total=None, speed="")

        def show(state: RunProgress) -> None:
            speed = f"{state.images_per_second:.1f} images/s" if state.images_per_second else ""
            bar.update(task, completed=state.batches_done, total=state.batches, speed=speed)

        run_dir = run_audit(config, show, _print_plan, execution)
    verdict = judge_run(run_dir, policy) if policy is not None else None
    if verdict is not None:
        _store_verdict(verdict, run_dir)  # before the report, which shows it
    report_path = render_report(run_dir, _images(report_images))
    _print_findings(RunStore.open(run_dir).summary())
    console.print(
        f"Results: {run_dir / 'results.parquet'}\n"
        f"Summary: {run_dir / SUMMARY_FILE}\n"
        f"Report:  {report_path}",
        highlight=False,
        markup=False,
        soft_wrap=True,  # paths stay whole, to copy
    )
    if as_json:
        click.echo((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"), nl=False)
    return run_dir, verdict


def _policy_settings(policy: Policy | None, alpha: float, min_group_size: int) -> dict[str, Any]:
    """``alpha`` and ``min_group_size`` for the statistics a policy judges.

    A flag given on the command line wins; else the policy's value, so that the report's
    statistics agree with the gate's; else the flag's default.
    """
    from click.core import ParameterSource

    context = click.get_current_context()
    settings: dict[str, Any] = {"alpha": alpha, "min_group_size": min_group_size}
    for name in settings:
        from_policy = getattr(policy, name, None)
        defaulted = context.get_parameter_source(name) == ParameterSource.DEFAULT
        if from_policy is not None and defaulted:
            settings[name] = from_policy
    return settings


def _store_verdict(verdict: Verdict, out_dir: Path) -> None:
    """Store the verdict in ``out_dir`` as gate.json, where the report and CI read it."""
    from auditor.store import GATE_FILE

    document = json.dumps(verdict.to_json(), indent=2)
    (out_dir / GATE_FILE).write_text(document, encoding="utf-8")


def _report_verdict(
    verdict: Verdict, out_dir: Path, junit_xml: Path | None, exit_on_failure: bool = True
) -> None:
    """Print what did not pass and the verdict in the report's words; write JUnit if asked.

    Then exit with EXIT_POLICY when the policy fails, unless told not to (the demo shows a
    failing policy on purpose).
    """
    from rich.table import Table

    from auditor.junit import write_junit
    from auditor.policy import FAIL, INSUFFICIENT
    from auditor.run_summary import StoredVerdict
    from reports.findings import policy_text

    shown = [r for r in verdict.results if r.outcome in (FAIL, INSUFFICIENT)]
    source = verdict.policy.source
    if shown:
        table = Table(title=Text(f"Policy gates not passed ({source})"))
        table.add_column("gate")
        table.add_column("outcome")
        table.add_column("figures")
        for result in shown:  # Text: gate names ("flip_rate[blackout]") are not markup
            table.add_row(Text(result.gate), Text(result.outcome), Text(result.message))
        console.print(table)
    text = policy_text(StoredVerdict.from_json(verdict.to_json()))  # as gate.json reads back
    style = "bold green" if verdict.holds else "bold red"
    console.print(Text(text, style=style), soft_wrap=True)  # Text: the source is a path
    if junit_xml is not None:
        junit_path = write_junit(verdict, junit_xml, out_dir.name)
        console.print(f"JUnit:   {junit_path}", highlight=False, markup=False)
    if exit_on_failure and not verdict.holds:
        click.get_current_context().exit(EXIT_POLICY)


def _print_plan(estimate: Any) -> None:
    """State the run's cost before it starts: Score-CAM or LIME can take hours on a CPU."""
    seconds = estimate.seconds
    duration = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
    per_image = ", ".join(f"{m} {n}" for m, n in estimate.passes_per_image.items())
    console.print(
        f"Auditing {estimate.images} images: about {estimate.model_passes:,} model passes, "
        f"roughly {duration} on this device (attribution passes per image: {per_image}).",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if estimate.note:
        console.print(
            f"Attribution: {estimate.note}.", highlight=False, markup=False, soft_wrap=True
        )


def _print_findings(summary: RunSummary) -> None:
    from rich.table import Table

    from reports.findings import findings, headlines, verdict

    data = summary.dataset
    methods = ", ".join(
        f"{m.name} on {m.target_layer or 'input pixels'}" for m in summary.attribution.methods
    )
    found = findings(summary)
    console.print(
        f"{data.images_audited} images audited, {data.images_skipped} skipped "
        f"({summary.seconds:.0f} s; attribution: {methods}). "
        f"{verdict(summary, found)}",
        highlight=False,
        markup=False,  # names layers and groups of the user's
        soft_wrap=True,
    )
    if not found:
        return
    first = headlines(found)
    table = Table(
        title=f"Findings, most harmful first: one per kind and probe ({len(first)} of "
        f"{len(found)}; all in the report)",
        show_lines=False,
    )
    table.add_column("#", justify="right")
    table.add_column("Finding")
    for number, finding in enumerate(first, 1):  # Text: group values are not markup
        table.add_row(str(number), Text(finding.text))
    console.print(table)


def main() -> None:
    cli(prog_name="audit")


if __name__ == "__main__":
    main()
