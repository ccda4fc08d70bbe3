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

from fileflow.home import DEFAULT_HOME, stack_state, use_stack
from fileflow.settings import PipelineSettings, StorageSettings
from fileflow.ops.submit import SUBMIT_CONCURRENCY

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
    from fileflow.settings import embedded_server_defaults

    # before Prefect is imported (it reads its settings once); the embedded server gets this environment
    os.environ.update(embedded_server_defaults(os.environ))
    from fileflow.ops.batch import collect, new_batch_id, print_summary, run_batch

    files = collect(paths)
    if not files:
        console.print("[red]no files found[/red] in " + ", ".join(map(str, paths)))
        raise typer.Exit(2)
    pipeline = PipelineSettings()
    if concurrency:
        pipeline = pipeline.model_copy(update={"max_active_files": concurrency})
    storage = StorageSettings().config(out=out)
    batch_id = new_batch_id()
    console.print(f"batch {batch_id}: {len(files)} files (Prefect runs tagged batch:{batch_id})")
    manifests = asyncio.run(run_batch(files, pipeline, storage, console=console, out=out, batch_id=batch_id))
    print_summary(manifests, console=Console(), out=out)
    raise typer.Exit(0 if manifests and all(m["status"] == "completed" for m in manifests) else 1)


@app.command()
def schema(
    output: Annotated[Optional[Path], typer.Option(help="write here instead of stdout")] = None,
) -> None:
    """Print the JSON Schema of the manifest."""
    from fileflow.engine.manifest import json_schema

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




@app.command()
def audit(
    out: Annotated[Optional[Path], typer.Option(help="local storage folder (default FILEFLOW_STORAGE_PATH)")] = None,
    stuck_after: Annotated[str, typer.Option(help="a file or run unfinished for longer is stuck (90, 30s, 15m, 2h)")] = "15m",
    heartbeat_after: Annotated[str, typer.Option(help="a Running run silent for longer has lost its heartbeat")] = "10m",
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    home: Annotated[Path, typer.Option(help="a stack started by `fileflow up` (its API and storage)")] = DEFAULT_HOME,
) -> None:
    """Was anything lost or is anything stuck? Exit 1 if so (lost, stuck, silent runs, missing renditions)."""
    use_stack(home)  # before anything imports Prefect, whose settings are read once
    from fileflow.ops.audit import audit as run_audit, parse_duration, print_report
    from blocks.storage import Store

    try:
        stuck, silent = parse_duration(stuck_after), parse_duration(heartbeat_after)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    store = Store(StorageSettings().config(out=out))
    report = asyncio.run(run_audit(store, stuck_after=stuck, heartbeat_after=silent))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print_report(report, Console())
    raise typer.Exit(0 if report.ok else 1)

storage_app = typer.Typer(help="Storage: Prefect blocks and the S3 bucket (FILEFLOW_STORAGE_* settings).")
app.add_typer(storage_app, name="storage")


@storage_app.command("blocks", hidden=True)
def storage_blocks(name: Annotated[str, typer.Option(help="block name")] = "fileflow-storage") -> None:
    """Saves nothing: fileflow's storage comes from FILEFLOW_STORAGE_* only (docs/storage.md)."""
    console.print(
        "fileflow no longer saves its storage as Prefect blocks: it reads it from FILEFLOW_STORAGE_* "
        "only, so a block edited in the Prefect UI would change nothing (docs/storage.md). A block "
        f"saved by an older version is not read; delete it with `prefect block delete s3-bucket/{name}` "
        f"(or local-file-system/{name})."
    )
    raise typer.Exit(2)


@storage_app.command("prepare-bucket")
def storage_prepare_bucket(
    tmp_days: Annotated[int, typer.Option(help="days after which objects under tmp/ expire")] = 1,
) -> None:
    """Create the bucket if missing, block public access, encrypt, expire tmp/; idempotent."""
    from deployments.storage import prepare_bucket
    from fileflow.errors import StorageUnavailable

    try:
        summary = prepare_bucket(StorageSettings().config(), tmp_days=tmp_days)
    except (ValueError, StorageUnavailable) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    Console().print_json(data=summary)


@app.command()
def up(
    workers: Annotated[int, typer.Option(help="worker processes per converter pool")] = 1,
    worker_type: Annotated[
        str,
        typer.Option(help="'warm' (fileflow.server.worker: warm children, woken by events; each process serves every "
                          "converter pool) or 'process' (Prefect's process worker, one per pool)"),
    ] = "warm",
    mediator_type: Annotated[
        str,
        typer.Option(help="'warm' (fileflow.server.worker: every file's flow in one warm process) or 'process' "
                          "(Prefect's process worker, claiming in its own name: a fresh engine process per file)"),
    ] = "warm",
    mediator_limit: Annotated[int, typer.Option(help="files the mediator processes at once")] = 32,
    port: Annotated[int, typer.Option(help="Prefect server port (the UI is there too)")] = 4200,
    database: Annotated[
        Optional[str],
        typer.Option(envvar="PREFECT_API_DATABASE_CONNECTION_URL", help="PostgreSQL URL (else SQLite)"),
    ] = None,
    out: Annotated[Path, typer.Option(help="local storage folder shared by every worker")] = Path("fileflow-out"),
    exporter_port: Annotated[int, typer.Option(help="port of the pending-work exporter")] = 9464,
    api_port: Annotated[int, typer.Option(help="port of the upload API (fileflow api); 0: a free one")] = 0,
    home: Annotated[Path, typer.Option(help="state and logs of the stack")] = DEFAULT_HOME,
    redis: Annotated[
        Optional[str],
        typer.Option(envvar="FILEFLOW_REDIS_URL",
                     help="redis://host:port/db, a Redis database of this stack's own: the server's events, "
                          "leases and background tasks go there instead of its memory"),
    ] = None,
    server_workers: Annotated[
        int, typer.Option(help="API processes of the Prefect server (above 1 needs --database and --redis)")
    ] = 1,
) -> None:
    """Start the distributed stack on this machine: server, deployments, workers, exporter."""
    from fileflow.server.stack import Stack

    stack = Stack(home=home.resolve(), port=port, workers_per_pool=workers, database_url=database,
                  storage_path=out, exporter_port=exporter_port, worker_type=worker_type,
                  mediator_type=mediator_type, mediator_limit=mediator_limit, redis_url=redis,
                  server_workers=server_workers, api_port=api_port)
    for problem in stack.problems():
        console.print(f"[red]{problem}[/red]")
    if stack.problems():
        raise typer.Exit(2)
    for option, value in (("--worker-type", worker_type), ("--mediator-type", mediator_type)):
        if value not in ("warm", "process"):
            console.print(f"[red]{option} must be 'warm' or 'process', not {value!r}[/red]")
            raise typer.Exit(2)
    if mediator_limit < 1:
        console.print(f"[red]--mediator-limit must be at least 1, not {mediator_limit}[/red]")
        raise typer.Exit(2)
    try:
        stack.up(progress=lambda msg: console.print(f"[cyan]up[/cyan] {msg}"))
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    console.print(
        f"[green]ready[/green]: Prefect UI and API at http://127.0.0.1:{port} "
        f"(export PREFECT_API_URL={stack.api_url}), exporter at http://127.0.0.1:{exporter_port}/metrics, "
        f"upload API at http://127.0.0.1:{stack.api_port}/uploads "
        + (f"(its token in {stack.api_token_file}), " if not os.environ.get("FILEFLOW_API_TOKENS") else "(FILEFLOW_API_TOKENS), ")
        + f"logs in {home / 'logs'}; {len(stack.processes)} processes"
    )


@app.command()
def api(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    home: Annotated[Path, typer.Option(help="the stack started by `fileflow up`, if PREFECT_API_URL is unset")] = DEFAULT_HOME,
) -> None:
    """Serve the upload API: POST /uploads, GET /uploads/{id} (FILEFLOW_API_TOKENS: its bearer tokens)."""
    use_stack(home)  # before anything imports Prefect, whose settings are read once
    from pydantic import ValidationError

    from fileflow.settings import ApiSettings

    try:
        settings = ApiSettings()
    except ValidationError as exc:
        console.print(f"[red]FILEFLOW_API_* settings: {exc}[/red]")
        raise typer.Exit(2)
    if not settings.tokens:
        console.print("[red]the upload API needs a bearer token: set FILEFLOW_API_TOKENS, e.g. "
                      "'[\"<a long random string>\"]'[/red]")
        raise typer.Exit(2)
    from fileflow.server.api import serve

    serve(host, port)


@app.command()
def down(home: Annotated[Path, typer.Option(help="state and logs of the stack")] = DEFAULT_HOME) -> None:
    """Stop every process `fileflow up` started."""
    from fileflow.server.stack import Stack

    if stack_state(home) is None:
        console.print(f"no stack recorded in {home}")
        return
    stack = Stack.recorded(home.resolve())
    count = len(stack.processes)
    killed = stack.down()
    console.print(f"stopped {count} processes" + (f" ({', '.join(killed)} had to be killed)" if killed else ""))


@app.command("restart-server")
def restart_server(
    home: Annotated[Path, typer.Option(help="state and logs of the stack")] = DEFAULT_HOME,
    database: Annotated[
        Optional[str],
        typer.Option(envvar="PREFECT_API_DATABASE_CONNECTION_URL",
                     help="the stack's PostgreSQL URL, if it has a password (stack.json records none)"),
    ] = None,
    redis: Annotated[
        Optional[str],
        typer.Option(envvar="FILEFLOW_REDIS_URL",
                     help="the stack's Redis URL, if it has a password (stack.json records none)"),
    ] = None,
) -> None:
    """Restart the Prefect server of `fileflow up` on the same port and database; the rest keeps running."""
    from fileflow.server.stack import Stack

    if stack_state(home) is None:
        console.print(f"[red]no stack recorded in {home}[/red]")
        raise typer.Exit(2)
    try:
        stack = Stack.recorded(home.resolve(), database_url=database, redis_url=redis)
        stack.restart_server()
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]restarted[/green] the Prefect server at {stack.api_url} (pid {stack.processes['server']})")


@app.command()
def submit(
    sources: Annotated[list[str], typer.Argument(help="local files or s3://bucket/key objects")],
    wait: Annotated[bool, typer.Option(help="follow the runs and print the manifests' status")] = False,
    home: Annotated[Path, typer.Option(help="the stack started by `fileflow up`")] = DEFAULT_HOME,
    concurrency: Annotated[int, typer.Option(help="files uploaded and started at once", min=1)] = SUBMIT_CONCURRENCY,
) -> None:
    """Upload files and start the process-file deployment for each (as an upload service does)."""
    use_stack(home)  # its API and storage unless set; before anything imports Prefect, whose settings are read once
    from rich.table import Table

    from fileflow.ops.batch import new_batch_id
    from fileflow.ops.submit import storage_for, submit as do_submit, wait_for

    if not os.environ.get("PREFECT_API_URL"):
        console.print("[red]no Prefect API: run `fileflow up` or set PREFECT_API_URL[/red]")
        raise typer.Exit(2)
    store = storage_for(StorageSettings().config())

    async def go():
        batch_id = new_batch_id()
        console.print(f"batch {batch_id}: Prefect runs tagged batch:{batch_id}")
        runs = await do_submit(sources, store, batch_id=batch_id, concurrency=concurrency, on_submitted=lambda run:
                               console.print(f"submitted {run.name} as run {run.flow_run_name} ({run.flow_run_id})"))
        if not wait:
            return runs, None
        def show(done, total, states):
            counts = {}
            for name in states.values():
                counts[name] = counts.get(name, 0) + 1
            console.print(f"{done}/{total} final  " + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
        return runs, await wait_for(runs, store, on_progress=show)

    try:
        runs, manifests = asyncio.run(go())
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    if manifests is None:
        return
    table = Table("file", "kind", "status", "error")
    for m in manifests:
        error = next((s["error"] for s in m["steps"] if s.get("error")), None)
        table.add_row(m["name"], m["kind"], m["status"], f"{error['type']}: {error['message']}" if error else "")
    Console().print(table)
    raise typer.Exit(0 if all(m["status"] == "completed" for m in manifests) else 1)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    window: Annotated[int, typer.Option(help="minutes of completions and failures to count", min=1)] = 60,
    home: Annotated[Path, typer.Option(help="the stack started by `fileflow up`, if any")] = DEFAULT_HOME,
    out: Annotated[Optional[Path], typer.Option(help="local storage folder of the callback outbox (default FILEFLOW_STORAGE_PATH)")] = None,
) -> None:
    """Files in flight by kind and stage, work waiting per pool, completions and failures, callbacks."""
    use_stack(home)  # before anything imports Prefect, whose settings are read once
    from datetime import timedelta

    from blocks.storage import Store
    from fileflow.ops.status import collect, render

    try:
        result = asyncio.run(collect(timedelta(minutes=window), home=home,
                                     store=Store(StorageSettings().config(out=out))))
    except Exception as exc:  # the API is down or refused: say so, no traceback
        console.print(f"[red]cannot read Prefect's API: {type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        render(result, Console())


@app.command()
def deliver(
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="put every finally failed delivery back in the outbox, then exit")] = False,
    out: Annotated[Optional[Path], typer.Option(help="local storage folder (default FILEFLOW_STORAGE_PATH)")] = None,
    home: Annotated[Path, typer.Option(help="a stack started by `fileflow up` (its storage)")] = DEFAULT_HOME,
) -> None:
    """Run the deliverer: POST the callback outbox (signed, retried with backoff) until stopped."""
    use_stack(home)
    import signal
    import threading

    from blocks.storage import Store
    from fileflow.engine.callbacks import retry_failed as put_back
    from fileflow.server.logs import setup_logging
    from fileflow.server.deliverer import run
    from fileflow.settings import CallbackSettings, NotifySettings

    try:
        settings, notify = CallbackSettings(), NotifySettings()
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    store = Store(StorageSettings().config(out=out))
    if retry_failed:
        moved = put_back(store)
        console.print(f"{len(moved)} failed deliveries back in the outbox")
        raise typer.Exit(0)
    setup_logging()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(store, settings, notify, stop)


@app.command("s3-events")
def s3_events(
    home: Annotated[Path, typer.Option(help="a stack started by `fileflow up` (its API)")] = DEFAULT_HOME,
) -> None:
    """Start processing for every object the S3 bucket notifies through SQS (FILEFLOW_S3_EVENTS_*)."""
    use_stack(home, storage=False)
    from fileflow.server.s3_events import main as consume

    try:
        raise typer.Exit(consume([]))
    except ValueError as exc:  # a bad configuration: say which setting
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)


@app.command()
def show(
    file: Annotated[str, typer.Argument(help="file id (SHA-256 or a prefix of 4+ hex digits) or the uploaded name")],
    out: Annotated[Optional[Path], typer.Option(help="local storage folder (default FILEFLOW_STORAGE_PATH)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object: manifest, flow run id, run URL")] = False,
    home: Annotated[Path, typer.Option(help="the stack started by `fileflow up`, if any")] = DEFAULT_HOME,
) -> None:
    """Print a file's manifest (from storage) and the link to its run in the Prefect UI."""
    use_stack(home)  # before anything imports Prefect, whose settings are read once
    from blocks.storage import Store
    from fileflow.errors import FileLookupError
    from fileflow.ops.show import find

    try:
        shown = asyncio.run(find(file, Store(StorageSettings().config(out=out))))
    except FileLookupError as exc:
        console.print(f"[red]{type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps(shown.as_json(), indent=2, ensure_ascii=False))
        return
    if shown.upload:
        Console().print_json(data={"upload": shown.upload})
    Console().print_json(data=shown.manifest)
    for row in shown.uploads or []:
        parent = f", inside upload {row['parent']}" if row["parent"] else ""
        shared = ", work shared with an earlier upload" if row["shared"] else ""
        typer.echo(f"upload {row['upload_id']}: {row['name']} ({row['status']}{parent}{shared})")
    typer.echo(f"run: {shown.run_url}" if shown.run_url else "run: none recorded in this Prefect (no manifest artifact)")


limits_app = typer.Typer(
    help="Steer a running fileflow: concurrency limits and pauses (Prefect global concurrency limits, "
    "work pools and queues; see docs/operations.md)."
)
app.add_typer(limits_app, name="limits")
TARGET = Annotated[str, typer.Argument(help="a converter name, 'active-files', 'reprocess' or 'reprocess-rate'")]


def _steer(coro_fn, *args) -> str:
    from fileflow.errors import InvalidRequest

    try:
        return asyncio.run(coro_fn(*args))
    except InvalidRequest as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)


@limits_app.command("show")
def limits_show(home: Annotated[Path, typer.Option(help="the stack started by `fileflow up`")] = DEFAULT_HOME) -> None:
    """Every limit and pause as Prefect has it now."""
    use_stack(home, storage=False)  # before anything imports Prefect, whose settings are read once
    from rich.table import Table

    from fileflow.ops.limits import show

    table = Table("target", "limit", "slots in use", "paused", "Prefect object")
    for row in asyncio.run(show()):
        table.add_row(row.target, row.limit, row.active_slots, row.paused, row.prefect_object)
    Console().print(table)


@limits_app.command("set")
def limits_set(
    target: TARGET,
    value: Annotated[float, typer.Argument(help="at once (at least 1), or files per second for reprocess-rate")],
    home: Annotated[Path, typer.Option(help="the stack started by `fileflow up`")] = DEFAULT_HOME,
) -> None:
    """Set a concurrency limit (or the reprocessing rate); running processes follow within a second."""
    use_stack(home, storage=False)  # before anything imports Prefect, whose settings are read once
    from fileflow.ops.limits import set_limit

    console.print(_steer(set_limit, target, value))


@limits_app.command("unset")
def limits_unset(
    target: TARGET,
    home: Annotated[Path, typer.Option(help="the stack started by `fileflow up`")] = DEFAULT_HOME,
) -> None:
    """Lift a cap: delete the limit, so nothing limits the target until it is set again."""
    use_stack(home, storage=False)  # before anything imports Prefect, whose settings are read once
    from fileflow.ops.limits import unset_limit

    console.print(_steer(unset_limit, target))


@limits_app.command("pause")
def limits_pause(
    target: Annotated[str, typer.Argument(help="a converter name or 'reprocess'")],
    home: Annotated[Path, typer.Option(help="the stack started by `fileflow up`")] = DEFAULT_HOME,
) -> None:
    """Pause a converter (its steps wait, none is interrupted) or all reprocessing."""
    use_stack(home, storage=False)  # before anything imports Prefect, whose settings are read once
    from fileflow.ops.limits import set_paused

    console.print(_steer(set_paused, target, True))


@limits_app.command("resume")
def limits_resume(
    target: Annotated[str, typer.Argument(help="a converter name or 'reprocess'")],
    home: Annotated[Path, typer.Option(help="the stack started by `fileflow up`")] = DEFAULT_HOME,
) -> None:
    """Resume a paused converter or reprocessing."""
    use_stack(home, storage=False)  # before anything imports Prefect, whose settings are read once
    from fileflow.ops.limits import set_paused

    console.print(_steer(set_paused, target, False))


@app.command()
def reprocess(
    kind: Annotated[Optional[list[str]], typer.Option(help="file kind (repeatable): image, pdf, office, ...")] = None,
    mime: Annotated[Optional[list[str]], typer.Option(help="MIME type, wildcards allowed: 'image/*' (repeatable)")] = None,
    since: Annotated[Optional[str], typer.Option(help="manifest written at or after (ISO date/time, UTC)")] = None,
    until: Annotated[Optional[str], typer.Option(help="manifest written before (ISO date/time, UTC)")] = None,
    converter: Annotated[Optional[str], typer.Option(help="files whose step of this converter ran ...")] = None,
    older_than: Annotated[Optional[str], typer.Option(help="... at a version older than this")] = None,
    error: Annotated[Optional[list[str]], typer.Option(help="a step failed with this error type (repeatable)")] = None,
    status: Annotated[Optional[list[str]], typer.Option(help="completed or failed (repeatable)")] = None,
    file: Annotated[Optional[list[str]], typer.Option(help="file id, id prefix (8+) or name (repeatable)")] = None,
    files_from: Annotated[Optional[Path], typer.Option(help="a text file of file ids or names, one a line")] = None,
    redo: Annotated[Optional[list[str]], typer.Option(help="run this converter again even if up to date")] = None,
    prefix: Annotated[Optional[str], typer.Option(help="storage prefix to reprocess (S3 key prefix or sub-folder)")] = None,
    job: Annotated[Optional[str], typer.Option(help="job id: the same id resumes a stopped job")] = None,
    workers: Annotated[int, typer.Option(help="files in flight in this run (fileflow-reprocess caps all runs)")] = 2,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only report how many files and steps it would touch")] = False,
    submit: Annotated[bool, typer.Option("--submit", help="start the reprocess deployment on the stack instead")] = False,
    out: Annotated[Path, typer.Option(help="storage folder (local storage)")] = Path("fileflow-out"),
    home: Annotated[Path, typer.Option(help="the stack started by `fileflow up` (with --submit)")] = DEFAULT_HOME,
) -> None:
    """Reprocess files already in storage: by default the steps of upgraded converters and failed steps."""
    if submit:
        use_stack(home, storage=False)  # before anything imports Prefect, whose settings are read once
    from fileflow.errors import InvalidRequest
    from fileflow.ops.reprocess import command

    try:
        code = command(
            dict(kinds=kind or [], mime=mime or [], since=since, until=until, converter=converter,
                 older_than=older_than, errors=error or [], status=status or [], files=file or [], redo=redo or []),
            files_from=files_from, prefix=prefix, job=job, workers=workers, dry_run=dry_run, submit=submit,
            out=out, home=home, console=console, stdout=Console(),
        )
    except InvalidRequest as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    raise typer.Exit(code)


if __name__ == "__main__":  # pragma: no cover
    app()
