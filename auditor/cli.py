"""The ``audit`` command. Thin: parse, build a config, call the pipeline, map to an exit code.

Exit codes: 0 the audit ran; 2 usage or input error (one line says what to do); 3 an internal
error (a bug in auditor: rerun with ``--debug`` for the traceback). Human output and progress
go to stderr; stdout stays free for ``--json``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from auditor import __version__
from auditor.errors import AuditorError

EXIT_OK, EXIT_INPUT, EXIT_INTERNAL = 0, 2, 3
F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)


def _split(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def handles_errors(command: F) -> F:
    """Turn domain errors into exit 2 with one clear line, and bugs into exit 3."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return command(*args, **kwargs)
        except AuditorError as exc:
            console.print(
                f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True
            )
            ctx.exit(EXIT_INPUT)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if ctx.find_root().params.get("debug"):
                raise
            console.print(
                f"[bold red]internal error:[/] {exc.__class__.__name__}: {exc}\n"
                "This is a bug in auditor, not in your input. Rerun with `audit --debug ...` "
                "for the traceback and report it.",
                highlight=False,
                soft_wrap=True,
            )
            ctx.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


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
    for option in reversed(options):
        command = option(command)
    return command


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Run directory [default: runs/<model name>].",
)
@click.option(
    "--arch", default=None, help="Architecture of a state_dict: a timm name, or torchvision:NAME."
)
@click.option("--classes", default=None, help="Class names in output order, comma-separated.")
@click.option("--input-size", default=None, help="Model input size: N or H,W.")
@click.option("--mean", default=None, help="Normalisation mean, three comma-separated numbers.")
@click.option("--std", default=None, help="Normalisation std, three comma-separated numbers.")
@click.option("--target-layer", default=None, help="Dotted module path of the CAM layer.")
@click.option(
    "--model-config",
    type=click.Path(path_type=Path),
    default=None,
    help="Model metadata JSON [default: <model>.json or model.json beside the model].",
)
@click.option(
    "--trust-model",
    is_flag=True,
    help="Allow loading a pickled nn.Module (runs code from the file).",
)
@click.option("--label-column", default="label", show_default=True)
@click.option(
    "--group-columns",
    default=None,
    help="Subgroup columns, comma-separated [default: gender,race where present].",
)
@click.option(
    "--method",
    "methods",
    default=None,
    help="Attribution method(s), comma-separated; each places its own regions and becomes a "
    "dimension of the results. CAMs: gradcam (default), gradcam++, xgradcam, hirescam, "
    "gradcam-elementwise, layercam, eigencam, eigengradcam, scorecam, ablationcam; captum: "
    "integrated_gradients (the default for TorchScript), saliency, input_x_gradient, smoothgrad, "
    "guided_gradcam, occlusion, feature_ablation, lime, kernel_shap. `audit methods` lists all.",
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
@click.option("--probes", default=None, help="Probes to run, comma-separated [default: all].")
@click.option(
    "--region-area",
    type=float,
    default=0.10,
    show_default=True,
    help="Edit region size as a fraction of the image.",
)
@audit_options
@handles_errors
def run(
    model: Path,
    dataset: Path,
    out_dir: Path | None,
    arch: str | None,
    classes: str | None,
    input_size: str | None,
    mean: str | None,
    std: str | None,
    target_layer: str | None,
    model_config: Path | None,
    trust_model: bool,
    label_column: str,
    group_columns: str | None,
    methods: str | None,
    ig_steps: int,
    samples: int,
    superpixels: int,
    attribution_batch_size: int,
    target_index: str | None,
    faithfulness_images: int,
    target: str,
    probes: str | None,
    region_area: float,
    as_json: bool,
    **shared: Any,
) -> None:
    """Audit MODEL on the images in DATASET."""
    from auditor.attribution import AttributionOptions
    from auditor.config import DEFAULT_PROBES, AuditConfig

    config = AuditConfig(
        model_path=model,
        dataset_dir=dataset,
        out_dir=out_dir or Path("runs") / model.stem,
        model_config=model_config,
        meta_overrides={
            "arch": arch,
            "classes": classes,
            "input_size": input_size,
            "mean": mean,
            "std": std,
            "target_layer": target_layer,
            "target_index": target_index,
        },
        trust_model=trust_model,
        label_column=label_column,
        group_columns=_split(group_columns),
        methods=_split(methods) or (),
        attribution=AttributionOptions(
            ig_steps=ig_steps,
            samples=samples,
            superpixels=superpixels,
            internal_batch_size=attribution_batch_size,
        ),
        faithfulness_images=faithfulness_images,
        target=target,
        probes=_split(probes) or DEFAULT_PROBES,
        region_area=region_area,
        **shared,
    )
    _audit_and_report(config, as_json)


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
)
@audit_options
@handles_errors
def demo(out_dir: Path, as_json: bool, **shared: Any) -> None:
    """Build the synthetic portrait world, train a biased and a control model, audit both."""
    from auditor.config import AuditConfig
    from auditor.demo import build_demo

    with console.status(
        "Generating the demo world and training two small models (about 2 minutes)..."
    ):
        world = build_demo(out_dir, seed=shared["seed"])
    for name, model in (("biased", world.biased_model), ("control", world.control_model)):
        console.rule(f"{name} model")
        config = AuditConfig(
            model_path=model,
            dataset_dir=world.audit_dir,
            out_dir=out_dir / name,
            label_column="gender",
            **shared,
        )
        _audit_and_report(config, as_json)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@handles_errors
def report(run_dir: Path) -> None:
    """Re-render RUN_DIR/report.html from stored results, without the model."""
    from reports import render_report

    if not (run_dir / "summary.json").is_file():
        raise AuditorError(
            f"{run_dir} holds no summary.json; pass the --out directory of a finished run"
        )
    console.print(f"Report: {render_report(run_dir)}")


def _audit_and_report(config: Any, as_json: bool) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from auditor.pipeline import run_audit
    from auditor.summary import read_summary
    from reports import render_report

    with Progress(
        TextColumn("auditing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("audit", total=None)
        run_dir = run_audit(
            config,
            lambda done, total: bar.update(task, completed=done, total=total),
            _print_plan,
        )
    report_path = render_report(run_dir)
    summary = read_summary(run_dir)
    _print_findings(summary)
    console.print(
        f"Results: {run_dir / 'results.parquet'}\n"
        f"Summary: {run_dir / 'summary.json'}\n"
        f"Report:  {report_path}"
    )
    if as_json:
        click.echo(json.dumps(summary, indent=2))


def _print_plan(estimate: Any) -> None:
    """State the run's cost before it starts: Score-CAM or LIME can take hours on a CPU."""
    seconds = estimate.seconds
    duration = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
    per_image = ", ".join(f"{m} {n}" for m, n in estimate.passes_per_image.items())
    console.print(
        f"Auditing {estimate.images} images: about {estimate.model_passes:,} model passes, "
        f"roughly {duration} on this device (attribution passes per image: {per_image}).",
        highlight=False,
        soft_wrap=True,
    )


def _print_findings(summary: dict[str, Any]) -> None:
    from rich.table import Table

    from reports.findings import findings, verdict

    data = summary["dataset"]
    methods = ", ".join(
        f"{m['name']} on {m['target_layer'] or 'input pixels'}"
        for m in summary["attribution"]["methods"]
    )
    console.print(
        f"{data['images_audited']} images audited, {data['images_skipped']} skipped "
        f"({summary['seconds']:.0f} s; attribution: {methods}). "
        f"{verdict(summary)}",
        highlight=False,
        soft_wrap=True,
    )
    found = findings(summary)
    if not found:
        return
    table = Table(title="Findings (largest effect first)", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("Finding")
    for number, finding in enumerate(found[:10], 1):
        table.add_row(str(number), finding.text)
    console.print(table)


def main() -> None:
    cli(prog_name="audit")


if __name__ == "__main__":
    main()
