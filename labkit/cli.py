"""The `labkit` command line: thin wrappers over the modules below it.

Introduced in notebooks/00_setup.ipynb (`labkit services ...`). Errors print one line and exit 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from labkit.config import ConfigError

app = typer.Typer(help="Contoso Chat workshop kit", no_args_is_help=True, add_completion=False)
services_app = typer.Typer(help="Start, stop and inspect the local services", no_args_is_help=True)
app.add_typer(services_app, name="services")
index_app = typer.Typer(help="Build the product search indexes", no_args_is_help=True)
app.add_typer(index_app, name="index")
data_app = typer.Typer(help="Load customers and orders into the active store", no_args_is_help=True)
app.add_typer(data_app, name="data")
tokens_app = typer.Typer(help="Sign-in tokens for the chat service (stored hashed)", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
monitor_app = typer.Typer(help="Dashboards, online evaluation, drift and alerts (notebook 08)",
                          no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")
console = Console()


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn configuration and service errors into one red line and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from labkit.services.manager import ServiceError

        known: tuple[type[Exception], ...] = (ConfigError, ServiceError)
        if fn.__name__ == "chat":
            from labkit.flow import FlowInputError
            from labkit.store import CustomerNotFound

            known += (FlowInputError, CustomerNotFound)
        try:
            return fn(*args, **kwargs)
        except known as exc:
            typer.echo(f"{type(exc).__name__}: {exc}", err=True)  # one unwrapped line
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@_friendly
def setup(no_services: Annotated[bool, typer.Option("--no-services", help="Do not start services")] = False
          ) -> None:
    """Check the environment and configuration; start the local services."""
    from labkit.doctor import setup as run_setup

    report = run_setup(start_services=not no_services)
    raise typer.Exit(0 if report.ok else 1)


@services_app.command("up")
@_friendly
def services_up(
    only: Annotated[list[str] | None,
                    typer.Option("--only", help="model, search or app (the app brings the others)")] = None,
) -> None:
    """Start the local services the configuration needs (reuses running ones)."""
    from labkit.services import ensure_running

    states = ensure_running(only or None)
    if not states:
        console.print("No local service needed: every backend is in the cloud.")
    for name, state in states.items():
        console.print(f"[green]up[/green] {name:7s} {state.base_url}  pid {state.pid}  log {state.log}")


@services_app.command("down")
@_friendly
def services_down() -> None:
    """Stop every local service and leave no process behind."""
    from labkit.services import stop

    stopped = stop()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "no local service was running")


@services_app.command("status")
@_friendly
def services_status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    show_keys: Annotated[bool, typer.Option("--show-keys", help="print the local search keys")] = False,
) -> None:
    """Each service's name, base URL, models and state (keys only with --show-keys)."""
    from labkit.services import local_search_keys, status

    rows = status()
    if show_keys:
        try:
            keys = local_search_keys()
        except ConfigError:
            keys = {}
        for row in rows:
            if row["name"] == "search":
                row["keys"] = keys
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("service", "state", "base URL", "pid", "models")
    for row in rows:
        colour = {"running": "green", "unhealthy": "yellow"}.get(row["state"], "dim")
        table.add_row(row["name"], f"[{colour}]{row['state']}[/{colour}]", row["base_url"],
                      str(row["pid"] or ""), ", ".join(row["models"]))
    console.print(table)
    for row in rows:
        if "keys_file" in row:
            console.print(f"search keys file: {row['keys_file']}")
        for kind, value in row.get("keys", {}).items():
            console.print(f"{kind}: {value}", highlight=False)


@index_app.command("build")
@_friendly
def index_build(
    strategy: Annotated[str, typer.Option("--strategy", help="product, window, section or all")] = "all",
) -> None:
    """Build products-<strategy> indexes (idempotent: a re-run upserts with identical counts)."""
    from labkit.search import STRATEGIES, build_index

    if strategy != "all" and strategy not in STRATEGIES:
        typer.echo(f"unknown strategy {strategy!r}; choose {', '.join(STRATEGIES)} or all", err=True)
        raise typer.Exit(2)
    table = Table("index", "documents", "avg words", "embed s", "upload s", "stale deleted")
    for name in STRATEGIES if strategy == "all" else [strategy]:
        r = build_index(name, progress=True)
        table.add_row(r.index, str(r.documents), f"{r.avg_words:.0f}", f"{r.embed_seconds:.1f}",
                      f"{r.upload_seconds:.1f}", str(r.deleted))
    console.print(table)


@data_app.command("load")
@_friendly
def data_load() -> None:
    """Load customers and orders from data/ into SQLite (local) or Cosmos DB (azure)."""
    from labkit.store import load_data

    counts = load_data()
    console.print(f"loaded {counts['customers']} customers and {counts['orders']} orders")


@app.command()
@_friendly
def chat(
    question: Annotated[str, typer.Argument(help="the customer's question")],
    customer: Annotated[str, typer.Option("--customer", help="customer id, e.g. C-001")],
    history: Annotated[str | None, typer.Option("--history", help="JSON file of [{role, content}]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole ChatResult as JSON")] = False,
) -> None:
    """Ask Contoso Chat one question as a customer (streams the answer)."""
    from labkit import flow

    turns = None
    if history:
        try:
            with open(history) as f:
                turns = json.load(f)
        except (OSError, ValueError) as exc:
            typer.echo(f"cannot read history file {history}: {exc}", err=True)
            raise typer.Exit(2) from None
    if as_json:
        result = flow.answer(question, customer, history=turns)
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return
    result = None
    for piece in flow.stream(question, customer, history=turns):
        if isinstance(piece, flow.ChatResult):
            result = piece
        else:
            sys.stdout.write(piece)
            sys.stdout.flush()
    assert result is not None
    sys.stdout.write("\n")
    sources = " ".join(f"[{c}]" for c in result.citations) or "(none)"
    console.print(f"[dim]Sources: {sources}  request {result.request_id}  "
                  f"{result.timings.get('total', 0):.1f} s[/dim]", highlight=False)
    if result.dropped_citations:
        dropped = ", ".join(result.dropped_citations)
        console.print(f"[yellow]dropped citations (not among the retrieved documents): {dropped}[/yellow]")


def _flow_configs(specs: list[str]) -> list[Any]:
    """`--config` values: a JSON/YAML file (one FlowConfig or a list) or inline JSON."""
    from pathlib import Path

    import yaml
    from pydantic import ValidationError

    from labkit.flow import FlowConfig

    configs: list[Any] = []
    for spec in specs:
        text = spec.strip()
        where = "inline JSON"
        if not text.startswith(("{", "[")):
            path = Path(spec)
            if not path.exists():
                raise ConfigError(f"--config {spec!r}: no such file (give a JSON/YAML file or inline JSON)")
            text, where = path.read_text(encoding="utf-8"), str(path)
        try:
            loaded = yaml.safe_load(text)
            items = loaded if isinstance(loaded, list) else [loaded]
            configs.extend(FlowConfig.model_validate(item) for item in items)
        except (yaml.YAMLError, ValidationError, TypeError) as exc:
            first = str(exc).splitlines()[0:3]
            raise ConfigError(f"--config {where}: not a FlowConfig ({' '.join(first)})") from None
    return configs


@app.command("eval")
def eval_command(
    data: Annotated[str, typer.Option("--data", help="JSONL rows (id, query, customer_id, ...)")] =
    "data/eval/testset.jsonl",
    config: Annotated[list[str] | None, typer.Option("--config", help="FlowConfig file or inline JSON; "
                                                      "repeat for variants")] = None,
    evaluators: Annotated[str | None, typer.Option(
        "--evaluators", help="comma-separated (default: retrieval,fact_recall,checks,similarity)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="N rows only (see --sample)")] = None,
    sample: Annotated[str, typer.Option("--sample", help="with --limit: first | stratified (by category)")]
    = "first",
    out: Annotated[str | None, typer.Option("--out", help="output folder (default under LABKIT_HOME/evals)")]
    = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, max=64,
                                                    help="rows in flight (1 local, 4 cloud)")] = None,
    gate: Annotated[list[str] | None, typer.Option("--gate", help='e.g. "retrieval.hit_at_5 >= 0.8"')] = None,
    gate_vs_baseline: Annotated[str | None, typer.Option("--gate-vs-baseline", help="baseline JSON file")]
    = None,
    max_drop: Annotated[float, typer.Option("--max-drop", help="allowed drop vs the baseline")] = 0.2,
    row_timeout: Annotated[float, typer.Option("--row-timeout", help="seconds per row")] = 180.0,
    save_baseline: Annotated[str | None, typer.Option("--save-baseline", help="write a baseline file")]
    = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="discard earlier results in the folder")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    target: Annotated[str | None, typer.Option("--target", help="evaluate a deployed service at this URL "
                                               "instead of the flow in this process")] = None,
    tokens: Annotated[str | None, typer.Option("--tokens", help="with --target: JSON file customer id -> "
                                               "token (`labkit tokens export`)")] = None,
) -> None:
    """Evaluate the flow, or a deployed service (--target), on a data file (resumable). Exit codes: 0 ok,
    1 gate failed, 2 bad input, 3 stopped early (budget, service unreachable, interrupted: re-run to
    resume), 4 rows with errors."""
    from labkit.evaluation import runner
    from labkit.evaluation.registry import DETERMINISTIC
    from labkit.evaluation.stats import GateError
    from labkit.services.manager import ServiceError

    try:
        names = [n.strip() for n in evaluators.split(",") if n.strip()] if evaluators else None
        options: dict[str, Any] = {}
        if target is not None:
            if config:
                raise ValueError("--target evaluates the deployed service's own flow: leave out --config")
            if tokens is None:
                raise ValueError("--target needs --tokens FILE (customer id -> token; "
                                 "`labkit tokens export`)")
            from labkit.evaluation.targets import public_url

            options = {"target": runner.http_target(target, runner.load_tokens(tokens)),
                       "target_name": "service", "target_info": {"url": public_url(target)}}
            names = names or list(DETERMINISTIC)
        elif tokens is not None:
            raise ValueError("--tokens is for --target")
        configs = _flow_configs(config or [])
        report = runner.evaluate(data, configs or None, evaluators=names, limit=limit, sample=sample,
                                 out=out, concurrency=concurrency, gates=gate or (),
                                 baseline=gate_vs_baseline, max_drop=max_drop,
                                 row_timeout_s=row_timeout, fresh=fresh, **options)
    except (ConfigError, ServiceError, GateError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"{type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(runner.EXIT_USAGE) from None
    if as_json:
        summaries = {name: run.summary for name, run in report.runs.items()}
        typer.echo(json.dumps(summaries, indent=2, default=str))
    else:
        for line in report.lines():
            typer.echo(line)
    if save_baseline and report.status in ("complete", "complete_with_errors"):
        path = runner.save_baseline(report.run, save_baseline)
        typer.echo(f"baseline written to {path}")
    raise typer.Exit(report.exit_code)


@tokens_app.command("issue")
@_friendly
def tokens_issue(
    customer: Annotated[str, typer.Option("--customer", help="customer id, e.g. C-001")],
    expires: Annotated[str, typer.Option("--expires", help="lifetime: 30m, 12h, 7d, 2w or never")] = "7d",
) -> None:
    """Print a new token for a customer, once (only its hash is stored)."""
    from labkit import store
    from labkit.app.tokens import TokenStore, parse_duration

    try:
        lifetime = parse_duration(expires)
        store.get_customer(customer)
    except (ValueError, store.CustomerNotFound) as exc:
        typer.echo(f"{type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    token, record = TokenStore().issue(customer, lifetime)
    typer.echo(token)
    typer.echo(f"token id {record.token_id} for {customer}; shown once, stored only as a hash", err=True)


@tokens_app.command("export")
@_friendly
def tokens_export(
    out: Annotated[str, typer.Option("--out", help="JSON file: customer id -> token (written 0600)")],
    expires: Annotated[str, typer.Option("--expires", help="lifetime: 30m, 12h, 1d, ...")] = "1d",
) -> None:
    """Issue a token for every customer in the store into one file, for `labkit eval --target --tokens`
    (the test set asks as every customer). The file holds secrets: keep it out of git and delete it after."""
    import os
    from pathlib import Path

    from labkit import store
    from labkit.app.tokens import TokenStore, parse_duration
    from labkit.schema import load_customers

    try:
        lifetime = parse_duration(expires)
    except ValueError as exc:
        typer.echo(f"ValueError: {exc}", err=True)
        raise typer.Exit(2) from None
    tokens = TokenStore()
    issued = {}
    for customer in load_customers():
        try:
            store.get_customer(customer.id)
        except store.CustomerNotFound:
            continue
        issued[customer.id] = tokens.issue(customer.id, lifetime)[0]
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode on open: make it owner-only
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(issued, f)
    typer.echo(f"wrote {len(issued)} tokens (expiring in {expires}) to {path}; values not shown")


@tokens_app.command("list")
@_friendly
def tokens_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Token ids, customers, expiry and state (never the tokens)."""
    from labkit.app.tokens import TokenStore, describe

    rows = [describe(r) for r in TokenStore().list()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("token id", "customer", "created", "expires", "state")
    for r in rows:
        table.add_row(r["token_id"], r["customer_id"], r["created"], r["expires"], r["state"])
    console.print(table)


@tokens_app.command("revoke")
@_friendly
def tokens_revoke(
    token_id: Annotated[str | None, typer.Argument(help="a token id from `labkit tokens list`")] = None,
    customer: Annotated[str | None, typer.Option("--customer", help="revoke all of a customer's")] = None,
) -> None:
    """Revoke a token by its id, or all tokens of a customer."""
    from labkit.app.tokens import TokenStore

    try:
        n = TokenStore().revoke(token_id, customer)
    except ValueError as exc:
        typer.echo(f"ValueError: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"revoked {n} token(s)")
    if n == 0:
        raise typer.Exit(1)


@app.command()
@_friendly
def finetune(
    name: Annotated[str, typer.Option("--name", help="model name to serve the adapter under")] = "contoso-ft",
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="optimizer steps (default: the "
                                                  "reference adapter's)")] = None,
    rebuild_data: Annotated[bool, typer.Option("--rebuild-data", help="regenerate data/finetune")] = False,
    out: Annotated[str | None, typer.Option("--out", help="default LABKIT_HOME/finetune/NAME")] = None,
) -> None:
    """Fine-tune the local model (LoRA on the CPU) on data/finetune and serve it as NAME (notebook 05)."""
    from labkit.finetune.pipeline import finetune as run_finetune
    from labkit.services import ensure_running

    ensure_running()
    done = run_finetune(out, name=name, max_steps=max_steps, rebuild_data=rebuild_data)
    console.print(done["train"].summary())
    console.print(f"adapter {done['gguf']} ({done['gguf_bytes'] / 1e6:.1f} MB) served as model {name!r}; "
                  f"use it with a FlowConfig such as eval/small.json (chat_model={name!r})")


@app.command()
@_friendly
def redteam(
    out: Annotated[str, typer.Option("--out", help="the report (JSON)")] = "build/redteam.json",
    limit_per_source: Annotated[int | None, typer.Option("--limit-per-source", help="published prompts "
                                                         "per source (default: all)")] = None,
    flow_limit: Annotated[int | None, typer.Option("--flow-limit", help="Contoso attacks through the full "
                                                   "flow (default: all)")] = None,
    benign: Annotated[int, typer.Option("--benign", help="benign questions through the full flow")] = 40,
    planted: Annotated[int | None, typer.Option("--planted", help="planted instructions (default: all)")]
    = None,
) -> None:
    """Red-team the guards: published and Contoso attacks, false positives, planted instructions
    (notebook 06)."""
    from labkit.safety import redteam as rt
    from labkit.services import ensure_running

    ensure_running()
    result = rt.report(limit_per_source=limit_per_source, flow_limit=flow_limit, benign=benign,
                       planted=planted)
    path = rt.save(result, out)
    s = result["summary"]
    held, good = s["attacks"]["held_out"], s["benign"]["all"]
    console.print(f"held-out attacks blocked {held['blocked']}/{held['n']} ({held['rate']:.1%}); "
                  f"benign blocked {good['blocked']}/{good['n']} ({good['rate']:.1%})")
    for name, f in s["flow"].items():
        console.print(f"{name}: attacks blocked {f['attacks_blocked']}/{f['attacks']}, benign blocked "
                      f"{f['benign_blocked']}/{f['benign']}, canary leaks {f['canary_leaks']}, guard p50 "
                      f"{f['guard_s_p50']} s")
    for name, pl in s["planted"].items():
        console.print(f"{name}: planted instructions followed {pl['followed']}/{pl['retrieved']} retrieved")
    console.print(f"report: {path}")


@app.command()
@_friendly
def serve(
    host: Annotated[str, typer.Option("--host", help="bind address (keep 127.0.0.1 unless deploying)")]
    = "127.0.0.1",
    port: Annotated[int | None, typer.Option("--port", help="default LABKIT_APP_PORT (8000)")] = None,
    config: Annotated[str | None, typer.Option("--config", help="a FlowConfig JSON file")] = None,
) -> None:
    """Serve Contoso Chat over HTTP: starts the local services it needs, then the app (uvicorn)."""
    import uvicorn

    from labkit.app.main import create_app
    from labkit.config import get_settings
    from labkit.services import ensure_running

    settings = get_settings()
    settings.check()
    ensure_running(settings=settings)  # the app itself never starts services (see docs/service.md)
    configs = _flow_configs([config]) if config else []
    uvicorn.run(create_app(settings, configs[0] if configs else None), host=host,
                port=port or settings.labkit_app_port, log_level="warning")


@app.command()
@_friendly
def workshop(
    only: Annotated[list[str] | None, typer.Option("--only", help="run notebooks whose name contains this")]
    = None,
) -> None:
    """Run every notebook headlessly into build/notebooks and print a status table."""
    from labkit.workshop import main as run_workshop

    raise typer.Exit(run_workshop(only))


# ---- monitor ------------------------------------------------------------------------------------
SinceOption = Annotated[str, typer.Option("--since", help="window: a duration (30m, 1h, 7d) or an instant")]
HomeOption = Annotated[str | None, typer.Option("--home", help="state folder to read (default: LABKIT_HOME; "
                                                "e.g. a folder written by `labkit monitor simulate`)")]


def _monitor_source(home: str | None) -> Any:
    from pathlib import Path

    from labkit.monitor.source import Source

    if home is None:
        return Source.current()
    if not Path(home).is_dir():
        raise ConfigError(f"--home {home}: no such folder")
    return Source(Path(home).resolve())


def _monitor_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Bad windows, rule files and missing baselines: one line and exit 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as exc:
            typer.echo(f"{type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@monitor_app.command("summary")
@_friendly
@_monitor_errors
def monitor_summary(since: SinceOption = "24h", home: HomeOption = None) -> None:
    """Requests, errors, latency, tokens, cost and feedback of a window, in the terminal."""
    from labkit.monitor import dashboard

    typer.echo(dashboard.summary_text(dashboard.build(_monitor_source(home), since=since)))


@monitor_app.command("report")
@_friendly
@_monitor_errors
def monitor_report(since: SinceOption = "24h", home: HomeOption = None,
                   out: Annotated[str, typer.Option("--out", help="the HTML file")] = "build/monitor.html",
                   rules: Annotated[str | None, typer.Option("--rules", help="alert rules (YAML)")] = None,
                   baseline: Annotated[str | None, typer.Option("--baseline", help="drift baseline (JSON)")]
                   = None) -> None:
    """One self-contained HTML report: dashboards, alerts and drift."""
    from labkit.monitor import alerts as alerting
    from labkit.monitor import dashboard, drift, report
    from labkit.monitor.source import load_scores, window

    source = _monitor_source(home)
    dash = dashboard.build(source, since=since)
    table = alerting.evaluate(rules, source)
    win = window(since)
    scores = load_scores(source)
    if len(scores) and "time" in scores:
        import pandas as pd

        times = pd.to_datetime(scores["time"], utc=True, format="ISO8601")
        scores = scores[(times >= pd.Timestamp(win.start)) & (times < pd.Timestamp(win.end))]
    try:
        drifted = drift.check(scores, drift.load_baseline(baseline))
    except FileNotFoundError as exc:  # the report is useful without a drift section
        drifted = None
        typer.echo(f"no drift section: {exc}", err=True)
    path = report.write(dash, out, table, drifted)
    typer.echo(f"wrote {path} ({dash.label}, {dash.overview['requests']:,} requests)")


@monitor_app.command("evaluate")
@_friendly
@_monitor_errors
def monitor_evaluate(home: HomeOption = None,
                     limit: Annotated[int | None, typer.Option("--limit", help="at most N samples")] = None,
                     no_judge: Annotated[bool, typer.Option("--no-judge", help="skip the groundedness judge")]
                     = False) -> None:
    """Score the sampled answers not scored yet (label-free evaluators and the groundedness judge)."""
    from labkit.monitor import online

    source = _monitor_source(home)
    if not no_judge:
        from labkit.services import ensure_running

        ensure_running()
    written = online.evaluate(source, limit=limit, judge=not no_judge)
    grounded = [s["groundedness"] for s in written if s.get("groundedness") is not None]
    unmeasured = sum(1 for s in written if s.get("groundedness") is None)
    mean = f"{sum(grounded) / len(grounded):.2f}" if grounded else "n/a"
    typer.echo(f"scored {len(written)} samples into {source.scores}; groundedness mean {mean} "
               f"over {len(grounded)}, unmeasured {unmeasured}")


@monitor_app.command("drift")
@_friendly
@_monitor_errors
def monitor_drift(since: SinceOption = "24h", home: HomeOption = None,
                  baseline: Annotated[str | None, typer.Option("--baseline", help="drift baseline (JSON)")]
                  = None) -> None:
    """Online scores of a window against the offline baseline: one verdict per metric."""
    import pandas as pd

    from labkit.monitor import drift
    from labkit.monitor.source import load_scores, window

    source = _monitor_source(home)
    win = window(since)
    scores = load_scores(source)
    if len(scores) and "time" in scores:
        times = pd.to_datetime(scores["time"], utc=True, format="ISO8601")
        scores = scores[(times >= pd.Timestamp(win.start)) & (times < pd.Timestamp(win.end))]
    if source.synthetic:
        typer.echo(f"SYNTHETIC traffic ({source.home}): not a measurement of any deployment")
    for line in drift.verdict_lines(drift.check(scores, drift.load_baseline(baseline))):
        typer.echo(line)


@monitor_app.command("alerts")
@_friendly
@_monitor_errors
def monitor_alerts(home: HomeOption = None,
                   rules: Annotated[str | None, typer.Option("--rules", help="alert rules (YAML)")] = None,
                   as_json: Annotated[bool, typer.Option("--json", help="print the table as JSON")] = False
                   ) -> None:
    """Evaluate the alert rules; exit code 1 when any fired (for a scheduler)."""
    from labkit.monitor import alerts as alerting

    source = _monitor_source(home)
    table = alerting.evaluate(rules, source)
    if source.synthetic and not as_json:  # the JSON rows carry "synthetic": true
        typer.echo(f"SYNTHETIC traffic ({source.home}): not a measurement of any deployment")
    if as_json:
        typer.echo(table.to_json(orient="records"))
    else:
        for line in alerting.alert_lines(table):
            typer.echo(line)
    raise typer.Exit(1 if (table["state"] == "fired").any() else 0)


@monitor_app.command("simulate")
@_friendly
@_monitor_errors
def monitor_simulate(out: Annotated[str, typer.Option("--out", help="folder to write")] = "build/synthetic",
                     days: Annotated[float, typer.Option("--days")] = 7.0,
                     rate: Annotated[float, typer.Option("--rate", help="requests per hour")] = 40.0,
                     seed: Annotated[int, typer.Option("--seed")] = 0,
                     drift_hours: Annotated[float, typer.Option("--drift-hours", help="the last N hours "
                                                                "drift (0: none)")] = 0.0) -> None:
    """Write synthetic traffic (labelled synthetic) to read with --home."""
    import datetime as dt

    from labkit.monitor.simulate import simulate

    end = dt.datetime.now(dt.UTC)
    drift_at = end - dt.timedelta(hours=drift_hours) if drift_hours > 0 else None
    traffic = simulate(out, days=days, requests_per_hour=rate, seed=seed, end=end, drift_at=drift_at)
    typer.echo(f"wrote {len(traffic.requests):,} synthetic requests and {traffic.spans:,} spans to {out}")


@monitor_app.command("baseline")
@_friendly
@_monitor_errors
def monitor_baseline(source: Annotated[str, typer.Option("--from", help="an evaluation output folder")],
                     out: Annotated[str, typer.Option("--out")] = "eval/monitor-baseline.json") -> None:
    """Make the drift baseline from an offline evaluation run."""
    from labkit.monitor import drift

    baseline = drift.build_baseline(source, out)
    typer.echo(f"wrote {out}: {len(baseline['rows'])} rows ({baseline['label']})")


# ---- governance (notebook 09) -------------------------------------------------------------------
@app.command()
@_friendly
def lineage(
    identifier: Annotated[str, typer.Argument(help="a request id, an evaluation id (eval-...) or a flow "
                                              "version")],
    as_json: Annotated[bool, typer.Option("--json", help="print the chain as JSON")] = False,
) -> None:
    """The chain from a served answer, an evaluation or a flow version back to its prompt, data and
    model hashes."""
    from labkit.registry.lineage import lineage as chain_of
    from labkit.registry.lineage import lines

    try:
        chain = chain_of(identifier)
    except LookupError as exc:
        typer.echo(f"LookupError: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(chain, indent=2, default=str))
    else:
        for line in lines(chain):
            typer.echo(line)


@app.command()
@_friendly
def promote(
    flow_version: Annotated[str, typer.Argument(help="the flow version to serve in production")],
    reason: Annotated[str, typer.Option("--reason", help="why, for the record")] = "",
    repository: Annotated[bool, typer.Option("--repository", help="also write registry/promoted.json and "
                                             "its card (to commit)")] = False,
) -> None:
    """Promote a flow version: refused unless an evaluation of that exact version passed its gates."""
    from labkit.registry import PromotionRefused
    from labkit.registry import promote as promote_version

    try:
        record = promote_version(flow_version, reason=reason, repository=repository)
    except PromotionRefused as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"promoted {flow_version} on {record['body']['evaluation']}; card: {record['card']}")
    typer.echo("`labkit serve` without --config now serves it (a running service: restart it)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
