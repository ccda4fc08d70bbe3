"""``fileflow``: the command line of the pipeline."""

from __future__ import annotations

import os

# Before Prefect is imported: no telemetry, and Prefect's own console lines would scroll the
# progress display away (they still reach the Prefect API and its UI).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")

import asyncio
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from fileflow.settings import PipelineSettings, StorageSettings

app = typer.Typer(
    help="fileflow turns uploads into what a browser can show, orchestrated by Prefect.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)


@app.command()
def process(
    paths: Annotated[list[Path], typer.Argument(help="files or folders to process", exists=True)],
    out: Annotated[Path, typer.Option(help="storage folder: renditions, results and manifests/")] = Path(
        "fileflow-out"
    ),
    concurrency: Annotated[
        Optional[int], typer.Option(help="files processed at once (default FILEFLOW_MAX_ACTIVE_FILES)")
    ] = None,
) -> None:
    """Process files and folders on this machine (embedded Prefect, local storage, child processes)."""
    from fileflow.batch import collect, print_summary, run_batch

    files = collect(paths)
    if not files:
        console.print("[red]no files found[/red] in " + ", ".join(map(str, paths)))
        raise typer.Exit(2)
    pipeline = PipelineSettings()
    if concurrency:
        pipeline = pipeline.model_copy(update={"max_active_files": concurrency})
    storage = StorageSettings().config(out=out)
    manifests = asyncio.run(run_batch(files, pipeline, storage, console=console, out=out))
    print_summary(manifests, console=Console(), out=out)
    raise typer.Exit(0 if manifests and all(m["status"] == "completed" for m in manifests) else 1)


@app.command()
def schema(
    output: Annotated[Optional[Path], typer.Option(help="write here instead of stdout")] = None,
) -> None:
    """Print the JSON Schema of the manifest."""
    from fileflow.manifest import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


@app.command()
def converters() -> None:
    """List the registered converters and their specs."""
    import converters as registry
    from rich.table import Table

    table = Table("name", "version", "kinds", "timeout s", "memory MiB", "retries", "what it does")
    for name, spec in registry.all_specs().items():
        table.add_row(
            name, spec.version, ",".join(sorted(spec.kinds)), f"{spec.timeout_s:g}", str(spec.memory_mb),
            str(spec.retries), spec.description,
        )
    Console().print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
