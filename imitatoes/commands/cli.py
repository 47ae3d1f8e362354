"""The command line. The only module that prints errors and chooses exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from imitatoes import __version__
from imitatoes.errors import ImitatoesError, InvalidSpec, Problem, SpecError, UsageError
from imitatoes.safe_text import printable

if TYPE_CHECKING:
    from imitatoes.commands.lifecycle import Outcome
    from imitatoes.standins.server import BackgroundServer

# Each command imports what it needs when it starts (the spec reader and jsonschema, the run
# machinery: requests, PIL, rich's live display), so `--help` and `validate` stay quick.

EXIT_CODES = "Exit codes: 0 done/clean, 1 error, 2 invalid spec or usage, 3 limits reached " \
             "without done, 130 interrupted."

# rich_markup_mode None: click's plain help, which shows no "<bool>" after every flag.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="A self-improving image loop: ComfyUI renders, a local vision model "
                       "critiques, imitatoes patches the parameters. " + EXIT_CODES)


@contextmanager
def reported() -> Iterator[None]:
    """Turn our typed errors and Ctrl-C into one message and an exit code, never a traceback."""
    try:
        yield
    except InvalidSpec as exc:
        for problem in exc.problems:
            typer.echo(printable(problem), err=True)
        typer.echo(f"imitatoes: the spec has {len(exc.problems)} problem(s); nothing was run",
                   err=True)
        raise typer.Exit(exc.exit_code) from None
    except ImitatoesError as exc:
        typer.echo(f"imitatoes: {printable(exc)}", err=True)  # may quote a server's words
        if exc.hint:
            typer.echo(printable(exc.hint), err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("imitatoes: interrupted", err=True)
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"imitatoes {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
          ) -> None:
    pass


class Format(str, Enum):
    text = "text"
    json = "json"


SetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE",
    help="Override a spec value: --set limits.max_loops=2 (repeatable).")]
AllowOutside = Annotated[bool, typer.Option(
    "--allow-outside", help="Let the spec name files outside its own folder (or git work "
    "tree): only for specs you trust.")]


@app.command()
def validate(
    specs: Annotated[list[Path], typer.Argument(metavar="SPEC...",
                                                help="Goal spec files (YAML).")],
    set_: SetOption = None,
    format: Annotated[Format, typer.Option(help="text, or json for machines.")] = Format.text,
    allow_outside: AllowOutside = False,
    comfy_url: Annotated[str | None, typer.Option(
        metavar="URL", help="Also check the workflow against this ComfyUI's node definitions "
        "(models it lacks, choices and ranges).")] = None,
) -> None:
    """Lint goal specs: every problem, as FILE:LINE:COL: WHERE: MESSAGE. Exit 0 clean, 2 not."""
    with reported():
        results = {str(path): _problems(path, set_ or [], allow_outside, comfy_url)
                   for path in specs}
    if format is Format.json:
        typer.echo(json.dumps([{"file": f, "ok": not ps, "problems": [p.as_dict() for p in ps]}
                               for f, ps in results.items()], indent=2))
    else:
        for file, problems in results.items():
            for problem in problems:
                typer.echo(str(problem))
            if not problems:
                typer.echo(f"{file}: ok")
        count = sum(len(ps) for ps in results.values())
        if count:
            typer.echo(f"{count} problem{'s' * (count != 1)} in "
                       f"{sum(1 for ps in results.values() if ps)} of {len(results)} spec(s)",
                       err=True)
    if any(results.values()):
        raise typer.Exit(2)


def _problems(path: Path, overrides: list[str], allow_outside: bool,
              comfy_url: str | None = None) -> list[Problem]:
    from imitatoes.spec import lint
    from imitatoes.spec import load as spec

    try:
        doc = spec.read(path, overrides + _url_overrides(comfy_url, None), os.environ,
                        allow_outside)
        found = lint.check(doc)
    except SpecError as exc:
        return [exc.problem]
    if found or not comfy_url:
        return found
    from imitatoes.commands.lifecycle import workflow_problems

    return [doc.problem(("workflow",), line)
            for line in workflow_problems(spec.build(doc))]


@app.command()
def init(
    workflow_file: Annotated[Path, typer.Argument(
        metavar="WORKFLOW", help="Your workflow: the UI format ComfyUI saves (Workflow > Save, "
        "or a template) or API format (Workflow > Export (API)).")],
    goal: Annotated[str | None, typer.Option(
        metavar="TEXT", help="What you want (default: the prompt).")] = None,
    output: Annotated[Path | None, typer.Option(
        metavar="FILE",
        help="Where the spec goes (default: beside the workflow, named after it).")] = None,
    comfy_url: Annotated[str | None, typer.Option(
        metavar="URL", help="A running ComfyUI whose node definitions (its custom nodes, "
        "its model files) convert and check the workflow instead of imitatoes' own catalogue "
        "of ComfyUI 0.3.64's core nodes (default: $IMITATOES_COMFY_URL).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Write nothing; print the spec init would write, its notes and the "
        "proposed knobs as JSON (for tools: the ComfyUI sidebar shows these).")] = False,
) -> None:
    """Write a starter spec for a workflow you already have: prompt, negative, seed, steps and
    cfg (or Flux guidance) bound by node path, starting at the workflow's own values, and
    knobs for sampler, scheduler, denoise and LoRA strengths proposed, commented out."""
    from imitatoes.spec import load as spec
    from imitatoes.spec import starter

    target = output or workflow_file.with_name(f"{starter.spec_name(workflow_file)}.yaml")
    url = comfy_url or os.environ.get("IMITATOES_COMFY_URL")
    with reported():
        info, version = _node_definitions(url) if url else (None, None)
        found = starter.write(workflow_file, target, goal, info, version, dry=as_json)
        if as_json:
            typer.echo(json.dumps({"spec": found.spec, "notes": found.notes,
                                   "knobs": found.knobs}))
            return
        try:
            spec.load(target, env={}, allow_outside=True)  # what init writes must validate
        except InvalidSpec:
            # kept for the user to read (the error points into it), under a name no command
            # takes for a spec of theirs
            rejected = target.with_name(f"{target.stem}.rejected.yaml")
            target.replace(rejected)
            spec.load(rejected, env={}, allow_outside=True)
            raise
    for note in found.notes:
        typer.echo(f"  {note}")
    typer.echo(f"wrote {target}; next: imitatoes validate {target}")


def _node_definitions(url: str) -> tuple[dict[str, Any], str]:
    """The server's whole node catalogue and its ComfyUI version."""
    from imitatoes.clients.comfy import ComfyClient, ComfyError

    client = ComfyClient(url, use_websocket=False)
    try:
        version = client.system_stats().get("system", {}).get("comfyui_version") or "?"
        return client.object_info(), str(version)
    except ComfyError as exc:
        raise UsageError(f"could not read the node definitions of ComfyUI at {url}: {exc}"
                         ) from None
    finally:
        client.close()


@app.command("schema")
def schema_cmd() -> None:
    """Print the goal-spec JSON Schema (point your editor at it; see docs/spec.md)."""
    from imitatoes.spec import lint

    typer.echo(json.dumps(lint.schema(), indent=2))


ComfyUrl = Annotated[str | None, typer.Option(metavar="URL", help="ComfyUI URL (default: "
                                             "$IMITATOES_COMFY_URL, then the one a run last "
                                             "used, then the spec's).")]
OllamaUrl = Annotated[str | None, typer.Option(metavar="URL", help="Critic URL (default: "
                                               "$IMITATOES_OLLAMA_URL, then the one a run last "
                                               "used, then the spec's).")]
RunsDir = Annotated[Path | None, typer.Option(
    metavar="DIR", help="Where new run folders go. Without it: $IMITATOES_RUNS, else the spec's "
    "output.dir, else ./runs (in the folder you start the command in).")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for further instruction "
                                   "after done.")]


def _url_overrides(comfy_url: str | None, ollama_url: str | None) -> list[str]:
    return ([f"comfyui.url={comfy_url}"] if comfy_url else []) + \
        ([f"critic.url={ollama_url}"] if ollama_url else [])


@app.command(help="Run the loop: render, critique, patch, until the critic finds every "
             "requirement met or the limits are reached. Checks the spec and both servers "
             "before anything is rendered. " + EXIT_CODES)
def run(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC", help="A goal spec (YAML).")],
    set_: SetOption = None,
    comfy_url: ComfyUrl = None,
    ollama_url: OllamaUrl = None,
    iterations_per_loop: Annotated[int | None, typer.Option(
        metavar="N", min=1, help="Renders per loop (limits.iterations_per_loop).")] = None,
    max_loops: Annotated[int | None, typer.Option(
        metavar="N", min=1, help="Loops at most (limits.max_loops).")] = None,
    runs_dir: RunsDir = None,
    yes: Yes = False,
    allow_outside: AllowOutside = False,
) -> None:
    overrides = [*(set_ or []), *_url_overrides(comfy_url, ollama_url)]
    if iterations_per_loop:
        overrides.append(f"limits.iterations_per_loop={iterations_per_loop}")
    if max_loops:
        overrides.append(f"limits.max_loops={max_loops}")
    with reported():
        from imitatoes.commands import terminal
        from imitatoes.commands.lifecycle import Run
        from imitatoes.spec import load as spec

        loaded = spec.load(spec_file, overrides, allow_outside=allow_outside)
        code = terminal.drive(Run.begin(loaded, runs_dir), yes=yes)
    raise typer.Exit(code)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder.")],
    instruction: Annotated[str, typer.Option(
        metavar="TEXT", help="Further instruction for the critic.")] = "",
    set_: SetOption = None,
    comfy_url: ComfyUrl = None,
    ollama_url: OllamaUrl = None,
    yes: Yes = False,
    refresh: Annotated[bool, typer.Option(
        "--refresh", help="Read the spec and workflow again from where the run came from "
        "(after a fix there), list what changed, and go on with them.")] = False,
) -> None:
    """Continue a run: an interrupted or crashed one where it stopped, a finished one with a
    further instruction and a fresh loop budget."""
    with reported():
        from imitatoes.commands import terminal
        from imitatoes.commands.lifecycle import Run

        overrides = [*(set_ or []), *_url_overrides(comfy_url, ollama_url)]
        run = Run.refresh(run_dir, overrides) if refresh else Run.reopen(run_dir, overrides)
        typer.echo(f"resuming with {run.spec.path} and {run.spec.workflow_path} (the run's own "
                   "copies: edit those, or fix the originals and resume with --refresh)")
        for note in run.notes:
            typer.echo(f"changed since the run was saved: {note}")
        if run.state and run.state.status == "done" and not instruction:
            run.tidy()
            typer.echo(f"{run_dir} is done; give --instruction to take it further")
            raise typer.Exit(0)
        try:
            changes = run.prepare()  # ComfyUI, its nodes and models, the critic model
        except ImitatoesError as exc:
            exc.hint = (f"the run folder is as it was; after fixing this, continue with: "
                        f"{run.resume_command} (add --refresh if you fixed the spec or "
                        "workflow it came from)")
            raise
        for change in changes:
            typer.echo(f"changed since the run last went: {change}")
        code = terminal.drive(run, yes=yes, instruction=instruction)
    raise typer.Exit(code)


@app.command()
def doctor(
    spec_file: Annotated[Path | None, typer.Argument(
        metavar="[SPEC]", help="A goal spec: also check its workflow, knobs and model.")] = None,
    comfy_url: ComfyUrl = None,
    ollama_url: OllamaUrl = None,
    model: Annotated[str | None, typer.Option(
        metavar="MODEL",
        help="Without a spec: the critic model to check (e.g. qwen2.5vl:7b).")] = None,
    allow_outside: AllowOutside = False,
) -> None:
    """Check ComfyUI, the workflow's nodes and limits, Ollama and the model; say what to fix."""
    from rich.console import Console

    from imitatoes.commands import doctor as checks
    from imitatoes.spec import load as spec

    with reported():
        loaded = spec.load(spec_file, _url_overrides(comfy_url, ollama_url),
                           allow_outside=allow_outside) if spec_file else None
    rows = checks.examine(
        loaded, comfy_url or os.environ.get("IMITATOES_COMFY_URL", "http://127.0.0.1:8188"),
        ollama_url or os.environ.get("IMITATOES_OLLAMA_URL") or
        spec.ollama_host_url(os.environ.get("OLLAMA_HOST", "")), model)
    Console(width=max(100, Console().width)).print(checks.table(rows))
    raise typer.Exit(1 if any(r.status == "fail" for r in rows) else 0)


@app.command()
def demo(
    runs_dir: RunsDir = None,
    pace: Annotated[float, typer.Option(
        metavar="FACTOR", min=0,
        help="Stand-in speed: 1 shows the table at work, 0 runs as fast as it can.")] = 1.0,
) -> None:
    """The whole loop against loopback stand-ins of ComfyUI and Ollama: no GPU, seconds."""
    from imitatoes.spec import load as spec
    from imitatoes.standins.comfyui import Behaviour as ComfyBehaviour
    from imitatoes.standins.comfyui import ComfyStandin
    from imitatoes.standins.ollama import Behaviour as OllamaBehaviour
    from imitatoes.standins.ollama import OllamaStandin

    with reported(), ComfyStandin(ComfyBehaviour(step_seconds=0.03 * pace)) as comfy, \
            OllamaStandin(OllamaBehaviour(latency=0.3 * pace)) as ollama:
        env = {**os.environ, "IMITATOES_COMFY_URL": comfy.url, "IMITATOES_OLLAMA_URL": ollama.url}
        loaded = spec.load(resources.files("imitatoes") / "data" / "demo.yaml", env=env)
        typer.echo(f"stand-ins: ComfyUI {comfy.url}, Ollama {ollama.url}\n(no GPU needed)")
        from imitatoes.commands import terminal
        from imitatoes.commands.lifecycle import Run

        code = terminal.drive(Run.begin(loaded, runs_dir), yes=True, next_step=_after_demo)
    raise typer.Exit(code)


def _after_demo(outcome: Outcome) -> str:
    """The demo's stand-ins stop with it, so `resume` needs them started again."""
    return ("the demo's stand-ins stopped with it; to take this run further, start them in\n"
            "another terminal (imitatoes standin both), then:\n"
            f"  imitatoes resume {outcome.run_dir} --comfy-url http://127.0.0.1:8188 "
            '--ollama-url http://127.0.0.1:11434 --instruction "..."')


@app.command("report")
def report_cmd(run_dir: Annotated[Path, typer.Argument(
        metavar="RUN_DIR", help="A run folder.")]) -> None:
    """Write report.html in a run folder again (a run rewrites it after every iteration and
    when it ends; this is for a folder copied elsewhere, or one an older imitatoes made)."""
    from imitatoes.runs import report

    with reported():
        typer.echo(str(report.write(run_dir)))


@app.command("replay")
def replay_cmd(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder.")],
    key: Annotated[str | None, typer.Argument(
        metavar="KEY",
        help="The iteration, e.g. loop_01_iter_02 (default: the final image).")] = None,
    comfy_url: ComfyUrl = None,
    format: Annotated[Format, typer.Option(help="text, or json for machines.")] = Format.text,
) -> None:
    """Render an iteration again exactly as recorded; say whether the image is the same and
    what changed that could explain it. Writes only RUN_DIR/replays/. Exit 0 identical, 3 not."""
    from imitatoes.runs import replay

    with reported():
        result = replay.replay(run_dir, key, _url_overrides(comfy_url, None))
        typer.echo(json.dumps(replay.to_dict(result), indent=2) if format is Format.json
                   else replay.describe(result))
    raise typer.Exit(result.exit_code)


@app.command("diff")
def diff_cmd(
    run_a: Annotated[Path, typer.Argument(metavar="RUN_A", help="A run folder.")],
    run_b: Annotated[Path, typer.Argument(metavar="RUN_B", help="Another run folder.")],
    format: Annotated[Format, typer.Option(help="text, or json for machines.")] = Format.text,
) -> None:
    """Two runs side by side: spec, workflow, what made the images, parameters and scores."""
    from imitatoes.runs import diff as rundiff

    with reported():
        result = rundiff.compare(run_a, run_b)
    typer.echo(json.dumps(result, indent=2) if format is Format.json else rundiff.text(result))


@app.command("memory")
def memory_cmd(
    spec_file: Annotated[Path | None, typer.Argument(
        metavar="[SPEC]", help="The store this spec uses (its memory: setting); without one, "
        "your own store.")] = None,
    clear: Annotated[bool, typer.Option(
        "--clear", help="Forget everything in the store.")] = False,
) -> None:
    """What runs remember across runs: which words, knob values and seeds helped which
    requirements, per workflow, checkpoint and critic model."""
    from imitatoes.loop import memory
    from imitatoes.runs import memory as store
    from imitatoes.spec import load as spec

    with reported():
        path = spec.load(spec_file).memory if spec_file else spec.memory_store(Path.cwd(), True)
    if path is None:
        typer.echo(f"{spec_file} has memory: false; nothing is kept")
        raise typer.Exit(0)
    if clear:
        typer.echo(f"forgot everything in {path}" if store.clear(path) else f"{path}: empty")
        raise typer.Exit(0)
    loaded = store.read(path)
    if loaded.note:
        typer.echo(printable(loaded.note), err=True)
    typer.echo(f"{path}: {len(loaded.entries)} run(s)")
    for line in memory.describe(loaded.entries):  # the critic's words, from earlier runs
        indent = line[:len(line) - len(line.lstrip())]
        typer.echo(indent + printable(line.lstrip(), one_line=True))


QueueOption = Annotated[str, typer.Option(
    metavar="NAME", help="The Celery queue (workers and batch must name the same one).")]


@app.command()
def batch(
    specs: Annotated[list[Path], typer.Argument(metavar="SPEC...", help="Goal specs.")],
    comfy: Annotated[list[str] | None, typer.Option(
        metavar="URL", help="A ComfyUI backend (repeatable).")] = None,
    ollama: Annotated[list[str] | None, typer.Option(
        metavar="URL",
        help="A critic URL: one for all backends, or one per --comfy in order.")] = None,
    broker: Annotated[str | None, typer.Option(
        metavar="URL",
        help="A Celery broker (redis://...): submit to `imitatoes worker`s instead.")] = None,
    runs_dir: RunsDir = None,
    queue: QueueOption = "imitatoes",
    timeout: Annotated[float | None, typer.Option(
        metavar="SECONDS",
        help="With --broker: stop waiting for the workers after this many seconds.")] = None,
    allow_outside: AllowOutside = False,
) -> None:
    """Run many specs: over several backends here, or over Celery workers with --broker.
    Exit 0 when every spec reached done, 3 when some stopped at their limits, 1 on failures."""
    from imitatoes.commands import batch as batching
    from imitatoes.commands import batch_ui
    from imitatoes.spec import load as spec

    with reported():
        loaded = [spec.load(p, allow_outside=allow_outside) for p in specs]
        if broker:
            from imitatoes.commands.cluster import Remote
            pool: Any = Remote(broker, loaded, queue, timeout)
        else:
            pool = batching.Batch(loaded, batching.pair(comfy or [], ollama or []), runs_dir)
        batch_ui.watch(pool.jobs, pool.run)
        typer.echo(batching.summary(pool.jobs, pool.dead))
    raise typer.Exit(batching.exit_code(pool.jobs))


@app.command()
def worker(
    broker: Annotated[str, typer.Option(
        metavar="URL", help="The Celery broker, e.g. redis://host:6379/0.")],
    comfy_url: Annotated[str, typer.Option(
        metavar="URL", help="This host's ComfyUI.")] = "http://127.0.0.1:8188",
    ollama_url: Annotated[str, typer.Option(
        metavar="URL", help="This host's critic.")] = "http://127.0.0.1:11434",
    runs_dir: Annotated[Path, typer.Option(
        metavar="DIR", help="The shared runs folder (the same path on each host).")] = Path("runs"),
    name: Annotated[str | None, typer.Option(
        metavar="NAME", help="This worker's name in the tables.")] = None,
    visibility_timeout: Annotated[float, typer.Option(
        metavar="SECONDS",
        help="Seconds before a run whose worker vanished is delivered again.")] = 3600.0,
    lease_seconds: Annotated[float, typer.Option(
        metavar="SECONDS", min=1, help="How long a vanished worker's hold on its run outlives "
        "it (renewed every third of it while the run goes).")] = 10.0,
    queue: QueueOption = "imitatoes",
) -> None:
    """Serve runs from the broker on this GPU host: one at a time, resumed if a worker dies."""
    from imitatoes.commands import cluster

    with reported():
        app_ = cluster.make_app(broker, visibility_timeout, queue)
        os.environ.update(IMITATOES_WORKER_COMFY_URL=comfy_url,
                          IMITATOES_WORKER_OLLAMA_URL=ollama_url,
                          IMITATOES_WORKER_RUNS=str(runs_dir.resolve()),
                          IMITATOES_WORKER_NAME=name or socket.gethostname(),
                          IMITATOES_WORKER_LEASE=str(lease_seconds))
        runs_dir.mkdir(parents=True, exist_ok=True)
        app_.worker_main(["worker", "--concurrency=1", "--pool=prefork", "--loglevel=INFO",
                          f"--queues={queue}", "--without-gossip", "--without-mingle",
                          f"--hostname={name or socket.gethostname()}@%h"])


bench_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Measure what the loop depends on.")
app.add_typer(bench_app, name="bench")


@bench_app.command("critic")
def bench_critic(
    models: Annotated[list[str] | None, typer.Argument(
        metavar="MODEL", help="Vision models to measure (default: qwen2.5vl:7b).")] = None,
    ollama_url: Annotated[str | None, typer.Option(metavar="URL", help="Ollama (default: "
                                                   "$IMITATOES_OLLAMA_URL, then :11434).")] = None,
    openai_url: Annotated[str | None, typer.Option(
        metavar="URL", help="An OpenAI-compatible server instead of Ollama.")] = None,
    images: Annotated[int, typer.Option(metavar="N", min=8, max=2000,
                                        help="Pictures in the labelled set.")] = 80,
    seed: Annotated[int, typer.Option(metavar="S", help="The set's seed.")] = 0,
    labels: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Your own labelled images instead (docs/bench.md).")] = None,
    runs_dir: RunsDir = None,
) -> None:
    """How far to trust a critic: each model judges a labelled set exactly as a run asks it;
    accuracy, false-met and missed rates, broken answers, head-to-head position bias and
    seconds per answer, per category, and what follows for a spec. Writes results.json and
    report.html (the wrong answers beside their images) under the runs folder."""
    from datetime import datetime, timezone

    from imitatoes.commands import bench, scenes

    with reported():
        cases, pairs = scenes.from_labels(labels) if labels else scenes.made(images, seed)
        url = (openai_url or ollama_url or os.environ.get("IMITATOES_OLLAMA_URL")
               or "http://127.0.0.1:11434").rstrip("/")
        root = runs_dir or Path(os.environ.get("IMITATOES_RUNS") or "runs")
        out = root / f"bench_{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        meta = {"set": str(labels) if labels else f"made: {images} images, seed {seed}",
                "url": url, "provider": "openai" if openai_url else "ollama"}
        plan = bench.Plan(tuple(models or ["qwen2.5vl:7b"]), url, meta["provider"], cases,
                          pairs, out, meta)
        typer.echo(f"measuring {', '.join(plan.models)} at {url} on {len(cases)} images and "
                   f"{len(pairs)} pairs; results go to {out}")
        try:
            results = bench.run(plan, lambda where: None)
        except KeyboardInterrupt:
            typer.echo(f"interrupted; what was measured is in {out}", err=True)
            raise
        typer.echo(bench.table(results))
        typer.echo(f"results: {out / 'results.json'}\nwrong answers: {out / 'report.html'}")


standin_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                          help="Run a loopback stand-in server (no GPU).")
app.add_typer(standin_app, name="standin")


def _serve_forever(*servers: tuple[BackgroundServer, str]) -> None:
    with reported():
        started = []
        try:
            for server, what in servers:
                server.log = sys.stdout  # a line per request, as ComfyUI and `ollama serve` do
                try:
                    server.start()
                except OSError as exc:
                    raise UsageError(f"cannot listen on {server.host}:{server.port}: "
                                     f"{exc.strerror}") from None
                started.append(server)
                typer.echo(f"{what} stand-in listening on {server.url} (Ctrl-C stops it)")
            threading.Event().wait()  # from here on, Ctrl-C is the normal way to stop: exit 0
        except KeyboardInterrupt:
            pass
        finally:
            for server in started:
                server.stop()


@standin_app.command("comfyui")
def standin_comfyui(
    port: Annotated[int, typer.Option(metavar="PORT", help="Port (0 picks a free one).")] = 8188,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to bind.")] = "127.0.0.1",
    step_seconds: Annotated[float, typer.Option(
        metavar="SECONDS", help="Render time per sampler step.")] = 0.05,
    checkpoint: Annotated[list[str] | None, typer.Option(
        metavar="NAME", help="A checkpoint name to pretend to have (repeatable).")] = None,
    grain: Annotated[float, typer.Option(
        metavar="AMOUNT",
        help="Grain over every render (0.1: photo-like to compress and decode).")] = 0.0,
    era: Annotated[str, typer.Option(
        metavar="ERA", help="0.3.64 (history and queue), jobs (a newer ComfyUI's Jobs API) or "
        "cloud (Comfy Cloud: /api, an API key, parallel slots, flat uploads).")] = "0.3.64",
    api_key_env: Annotated[str | None, typer.Option(
        metavar="NAME", help="cloud: the variable holding the key it accepts.")] = None,
    parallel: Annotated[int, typer.Option(metavar="N", min=1, max=64,
                                          help="Prompts it runs at once.")] = 1,
) -> None:
    """A ComfyUI that draws the prompt's colours and shapes; its faults and pace are set with
    POST /imitatoes/behaviour."""
    from imitatoes.standins.comfy_eras import ERAS
    from imitatoes.standins.comfyui import DEFAULT_CHECKPOINTS, Behaviour, ComfyStandin

    if era not in ERAS:
        raise typer.BadParameter(f"{era!r}: choose one of {', '.join(ERAS)}",
                                 param_hint="--era")
    key = os.environ.get(api_key_env or "", "") if api_key_env else ""
    if era == "cloud" and not key:
        raise typer.BadParameter("cloud wants a key: --api-key-env NAME, with NAME set",
                                 param_hint="--api-key-env")
    behaviour = Behaviour(step_seconds=step_seconds,
                          checkpoints=checkpoint or list(DEFAULT_CHECKPOINTS), grain=grain,
                          era=era, api_key=key, parallel=parallel)
    _serve_forever((ComfyStandin(behaviour, host, port), "ComfyUI"))


@standin_app.command("ollama")
def standin_ollama(
    port: Annotated[int, typer.Option(metavar="PORT", help="Port (0 picks a free one).")] = 11434,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to bind.")] = "127.0.0.1",
    latency: Annotated[float, typer.Option(metavar="SECONDS", help="Seconds per answer.")] = 0.2,
) -> None:
    """An Ollama whose vision model checks colours, shapes, noise and watermarks."""
    from imitatoes.standins.ollama import Behaviour, OllamaStandin

    _serve_forever((OllamaStandin(Behaviour(latency=latency), host, port), "Ollama"))


@standin_app.command("both")
def standin_both(
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to bind.")] = "127.0.0.1",
    comfy_port: Annotated[int, typer.Option(metavar="PORT", help="ComfyUI's port.")] = 8188,
    ollama_port: Annotated[int, typer.Option(metavar="PORT", help="Ollama's port.")] = 11434,
) -> None:
    """Both stand-ins where imitatoes looks by default: ComfyUI on port 8188, Ollama on 11434
    (the walkthrough in the README runs against these)."""
    from imitatoes.standins.comfyui import DEFAULT_CHECKPOINTS, ComfyStandin
    from imitatoes.standins.comfyui import Behaviour as ComfyBehaviour
    from imitatoes.standins.ollama import Behaviour as OllamaBehaviour
    from imitatoes.standins.ollama import OllamaStandin

    comfy = ComfyStandin(ComfyBehaviour(step_seconds=0.05,
                                        checkpoints=list(DEFAULT_CHECKPOINTS)), host, comfy_port)
    ollama = OllamaStandin(OllamaBehaviour(latency=0.2), host, ollama_port)
    _serve_forever((comfy, "ComfyUI"), (ollama, "Ollama"))


def _terminate(signum: int, frame: object) -> None:
    # `kill PID` (what process managers send) stops a run as Ctrl-C does: ComfyUI is told to
    # drop our prompt and the run folder is left resumable.
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a command body (e.g. while typer starts)
        _exit(130)
    except SystemExit as exc:
        _exit(exc.code)


def _exit(code: object) -> None:
    """Leave without the interpreter's teardown when nothing is left to finish: freeing every
    module's objects costs 40 ms, a fifth of a short command. By then every file we wrote is
    closed; a thread that is not a daemon (work still going) gets the normal exit, which
    waits for it, and so does an exit with a message instead of a number."""
    busy = any(t is not threading.main_thread() and not t.daemon and t.is_alive()
               for t in threading.enumerate())
    if busy or not (code is None or isinstance(code, int)):
        sys.exit(code)
    if "logging" in sys.modules:  # flush what the teardown would have flushed
        sys.modules["logging"].shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
