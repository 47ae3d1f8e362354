"""The command line. The only module that prints errors and chooses exit codes."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from . import __version__, lint, spec
from .errors import ImitatoesError, Problem, SpecError, UsageError

if TYPE_CHECKING:
    from .standins.server import BackgroundServer

EXIT_CODES = "Exit codes: 0 done/clean, 1 error, 2 invalid spec or usage, 3 limits reached " \
             "without done, 130 interrupted."

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="A self-improving image loop: ComfyUI renders, a local vision model "
                       "critiques, imitatoes patches the parameters. " + EXIT_CODES)


@contextmanager
def reported() -> Iterator[None]:
    """Turn our typed errors and Ctrl-C into one message and an exit code, never a traceback."""
    try:
        yield
    except ImitatoesError as exc:
        typer.echo(f"imitatoes: {exc}", err=True)
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
    "--set", help="Override a spec value: --set limits.max_loops=2 (repeatable).")]


@app.command()
def validate(
    specs: Annotated[list[Path], typer.Argument(help="Goal spec files (YAML).")],
    set_: SetOption = None,
    format: Annotated[Format, typer.Option(help="text, or json for machines.")] = Format.text,
) -> None:
    """Lint goal specs: every problem, as FILE:LINE:COL: WHERE: MESSAGE. Exit 0 clean, 2 not."""
    with reported():
        results = {str(path): _problems(path, set_ or []) for path in specs}
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


def _problems(path: Path, overrides: list[str]) -> list[Problem]:
    try:
        return lint.check(spec.read(path, overrides, os.environ))
    except SpecError as exc:
        return [exc.problem]


@app.command("schema")
def schema_cmd() -> None:
    """Print the goal-spec JSON Schema (point your editor at it; see the README)."""
    typer.echo(json.dumps(lint.schema(), indent=2))


standin_app = typer.Typer(no_args_is_help=True, help="Run a loopback stand-in server (no GPU).")
app.add_typer(standin_app, name="standin")


def _serve_forever(server: BackgroundServer, what: str) -> None:
    with reported():
        try:
            server.start()
        except OSError as exc:
            raise UsageError(f"cannot listen on {server.host}:{server.port}: {exc.strerror}") \
                from None
        typer.echo(f"{what} stand-in listening on {server.url} (Ctrl-C stops it)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:  # the normal way to stop a server: no error
            pass
        finally:
            server.stop()


@standin_app.command("comfyui")
def standin_comfyui(
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8188,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    step_seconds: Annotated[float, typer.Option(help="Render time per sampler step.")] = 0.05,
    checkpoint: Annotated[list[str] | None, typer.Option(
        help="A checkpoint name to pretend to have (repeatable).")] = None,
) -> None:
    """A ComfyUI that draws the prompt's colours and shapes; faults via POST /imitatoes/knobs."""
    from .standins.comfyui import DEFAULT_CHECKPOINTS, ComfyStandin, Knobs

    knobs = Knobs(step_seconds=step_seconds, checkpoints=checkpoint or list(DEFAULT_CHECKPOINTS))
    _serve_forever(ComfyStandin(knobs, host, port), "ComfyUI")


@standin_app.command("ollama")
def standin_ollama(
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 11434,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    latency: Annotated[float, typer.Option(help="Seconds per answer.")] = 0.2,
) -> None:
    """An Ollama whose vision model checks colours, shapes, noise and watermarks."""
    from .standins.ollama import Knobs, OllamaStandin

    _serve_forever(OllamaStandin(Knobs(latency=latency), host, port), "Ollama")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a command body (e.g. while typer starts)
        sys.exit(130)
