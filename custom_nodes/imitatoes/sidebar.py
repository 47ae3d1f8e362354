"""The server side of the Imitatoes sidebar: routes under /imitatoes/ on ComfyUI's own server.

They run the `imitatoes` command (never its modules: ComfyUI's Python and the tool's may
differ) against this ComfyUI, in ordinary run folders under ComfyUI's output folder, and push
each new iteration to the page over ComfyUI's websocket. ComfyUI is often reachable on a LAN
(--listen), so every route takes only the fields the tab sends, each checked; the command, its
path and every file path come from this side (IMITATOES_BIN, or `imitatoes` on PATH), never
from a request; names are checked before they become folder names; bodies are capped; one loop
runs per graph at a time. Standard library and aiohttp (which ComfyUI has) only."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from aiohttp import web

MAX_BODY = 4 * 2**20  # a big graph is a few hundred KiB
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z_[A-Za-z0-9._-]{1,100}$")
KEY = re.compile(r"^loop_[0-9]{2}_iter_[0-9]{2}(_c[0-9]{1,2})?$")
MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")
URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]{1,200}/?$")
NODE_PATH = re.compile(r"^[A-Za-z0-9:_-]{1,40}\.inputs\.[A-Za-z0-9_]{1,60}$")
PARAMETERS = {"prompt", "negative", "seed", "cfg", "steps"}
START_FIELDS = {"name", "prompt", "workflow", "goal", "requirements", "model", "ollama_url",
                "iterations", "loops", "bindings", "start", "bounds"}
BOUNDS = {"cfg": {"min", "max", "max_delta"}, "steps": {"min", "max", "max_delta"},
          "prompt": {"max_chars"}, "negative": {"max_terms"}}
EVENT = "imitatoes.iteration"  # ComfyUI websocket event our page listens for


class Refused(Exception):
    """A request the routes will not act on; its text is the 400's answer."""


class Sidebar:
    """The sidebar's state: where runs go, the command, and the loops running now."""

    def __init__(self, output_dir: Path, user_dir: Path, comfy_url: str,
                 send=lambda event, data: None, command: list[str] | None = None) -> None:
        self.root = Path(output_dir).resolve() / "imitatoes"
        self.saved = Path(user_dir).resolve() / "imitatoes"
        self.comfy_url = comfy_url
        self.send = send
        self.command = command or find_command()
        self.running: dict[str, subprocess.Popen] = {}  # graph name -> its `imitatoes run`
        self.elsewhere: dict[str, Path] = {}  # runs started from a terminal against us
        self.lock = threading.Lock()

    # -- what the tab asks ----------------------------------------------------------------------
    def status(self, ollama_url: str | None) -> dict:
        out = {"imitatoes": self._version(), "ollama": None, "running": sorted(self.running)}
        if ollama_url:
            out["ollama"] = ollama_models(check_url(ollama_url))
        return out

    def propose(self, graph: dict) -> dict:
        """The bindings `imitatoes init` would choose for this graph (API format)."""
        check_graph(graph)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "graph.json"
            path.write_text(json.dumps(graph))
            done = self._run(["init", str(path), "--json", "--comfy-url", self.comfy_url], 60)
        return json.loads(done.stdout)

    def start(self, body: dict) -> dict:
        spec, graph, name = spec_from(body)
        with self.lock:
            if name in self.running and self.running[name].poll() is None:
                raise Refused(f"a loop on {name!r} is already running: stop it first")
        folder = self.root / "specs" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "workflow.api.json").write_text(json.dumps(graph, indent=1))
        # JSON is YAML: the spec needs no YAML library on ComfyUI's side
        (folder / "spec.yaml").write_text(json.dumps(spec, indent=2) + "\n")
        before = set(self._runs())
        # `run` validates the spec and checks both servers before it makes a folder: a
        # problem ends it first, and its words are the answer
        proc = self._spawn(name, ["run", str(folder / "spec.yaml"), "--yes", "--runs-dir",
                                  str(self.root / "runs"), "--comfy-url", self.comfy_url,
                                  "--ollama-url", spec["critic"]["url"]], before=before)
        run = self._new_run(before, proc)
        if run is None and proc.poll() not in (None, 0):
            log = (self.root / f"{name}.log").read_text(errors="replace")
            raise Refused(log.strip()[-2000:] or f"imitatoes run exited {proc.returncode}")
        return {"name": name, "run": run.name if run else None}

    def stop(self, name: str) -> dict:
        with self.lock:
            proc = self.running.get(check_name(name))
        if proc is None or proc.poll() is not None:
            raise Refused(f"no loop on {name!r} is running")
        # SIGTERM, which imitatoes takes as Ctrl-C (ComfyUI drops our prompt; the folder stays
        # resumable): SIGINT is ignored by a child of a ComfyUI started in the background
        proc.send_signal(signal.SIGTERM)
        return {"stopped": name}

    def resume(self, name: str, run_id: str, instruction: str) -> dict:
        run = self.run_dir(run_id)
        if len(instruction) > 2000:
            raise Refused("the instruction is longer than 2000 characters")
        with self.lock:
            if name in self.running and self.running[check_name(name)].poll() is None:
                raise Refused(f"a loop on {name!r} is already running")
        self._spawn(name, ["resume", str(run), "--yes", "--comfy-url", self.comfy_url,
                           *(["--instruction", instruction] if instruction.strip() else [])],
                    run=run)
        return {"name": name, "run": run.name}

    def save(self, name: str) -> dict:
        """The spec and its workflow, as files to keep in git (what `init` writes)."""
        folder = self.root / "specs" / check_name(name)
        if not (folder / "spec.yaml").is_file():
            raise Refused(f"no loop named {name!r} was started here")
        self.saved.mkdir(parents=True, exist_ok=True)
        spec = json.loads((folder / "spec.yaml").read_text())
        spec["workflow"] = f"{name}.api.json"
        shutil.copyfile(folder / "workflow.api.json", self.saved / f"{name}.api.json")
        (self.saved / f"{name}.yaml").write_text(json.dumps(spec, indent=2) + "\n")
        return {"spec": str(self.saved / f"{name}.yaml"),
                "workflow": str(self.saved / f"{name}.api.json")}

    def runs(self) -> list[dict]:
        mine = {d.name: d for d in self._runs()}
        found = sorted({**self.elsewhere, **mine}.items(), reverse=True)[:50]
        return [dict(summary(d), here=name in mine) for name, d in found]

    def noticed(self, body: dict) -> dict:
        """ComfyUI's on-prompt hook: a prompt an imitatoes run sent names its run folder;
        a real run folder (state.json and spec.yaml there) joins the tab's list. Only its
        own files are ever read from it, by the same checked names as ours."""
        extra = body.get("extra_data") if isinstance(body, dict) else None
        named = (extra.get("imitatoes") or {}).get("run") if isinstance(extra, dict) else None
        if isinstance(named, str) and len(named) < 4096 and os.path.isabs(named):
            run = Path(named)
            if RUN_ID.match(run.name) and (run / "state.json").is_file() and \
                    (run / "spec.yaml").is_file() and len(self.elsewhere) < 1000:
                self.elsewhere[run.name] = run
        return body

    def cards(self, run_id: str) -> dict:
        run = self.run_dir(run_id)
        return {**summary(run), "cards": [card(p) for p in sorted(run.glob("loop_*_iter_*.json"))
                                          if KEY.match(p.stem)]}

    def run_dir(self, run_id: str) -> Path:
        if not isinstance(run_id, str) or not RUN_ID.match(run_id):
            raise Refused("not a run of this sidebar")
        run = self.root / "runs" / run_id
        if not run.is_dir():
            run = self.elsewhere.get(run_id, run)
        if not (run / "state.json").is_file():
            raise Refused("not a run of this sidebar")
        return run

    def image(self, run_id: str, key: str) -> Path:
        run = self.run_dir(run_id)
        if not isinstance(key, str) or not KEY.match(key):
            raise Refused("not an iteration")
        for path in (run / "thumbs" / f"{key}.jpg", run / f"{key}.png"):
            if path.is_file():
                return path
        raise Refused("no such image")

    # -- the command ----------------------------------------------------------------------------
    def _version(self) -> dict:
        if not self.command:
            return {"ok": False, "problem": "the imitatoes command is not installed here: run "
                    "its ./scripts/install.sh (it puts imitatoes on PATH), or set IMITATOES_BIN "
                    "for ComfyUI, then restart ComfyUI"}
        try:
            done = self._run(["--version"], 20)
            helped = self._run(["init", "--help"], 20)
        except Refused as exc:
            return {"ok": False, "problem": str(exc)}
        if "--json" not in helped.stdout:
            return {"ok": False, "problem": f"{done.stdout.strip()} is too old for the sidebar: "
                    "update it (git pull, ./scripts/install.sh)"}
        return {"ok": True, "version": done.stdout.strip()}

    def _run(self, args: list[str], timeout: float, check: bool = True
             ) -> subprocess.CompletedProcess:
        if not self.command:
            raise Refused("the imitatoes command is not installed here")
        try:
            done = subprocess.run([*self.command, *args], capture_output=True, text=True,
                                  timeout=timeout, env=_env(), stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Refused(f"imitatoes {args[0]} failed: {exc}") from None
        if check and done.returncode != 0:
            raise Refused((done.stderr or done.stdout).strip()[-2000:] or
                          f"imitatoes {args[0]} exited {done.returncode}")
        return done

    def _spawn(self, name: str, args: list[str], run: Path | None = None,
               before: set[Path] | None = None) -> subprocess.Popen:
        """Start the command; a watcher follows the run it makes (`before`: the runs there
        were, so an older run of the same graph is never taken for it) or resumes (`run`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen([*self.command, *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_env())
        log.close()
        with self.lock:
            self.running[name] = proc
        threading.Thread(target=self._watch, args=(name, proc, run, before or set()),
                         daemon=True, name=f"imitatoes-watch-{name}").start()
        return proc

    def _runs(self) -> list[Path]:
        base = self.root / "runs"
        return [d for d in base.iterdir() if RUN_ID.match(d.name) and d.is_dir()] \
            if base.is_dir() else []

    def _new_run(self, before: set[Path], proc: subprocess.Popen,
                 wait: float = 60.0) -> Path | None:
        """The folder the run made, once it made one; None if it ended first."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            new = set(self._runs()) - before
            if new:
                return max(new)
            if proc.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def _watch(self, name: str, proc: subprocess.Popen, run: Path | None,
               before: set[Path]) -> None:
        """Push each new iteration, and the end, to the page while the run goes (a resumed
        run's earlier iterations too: the page shows the run whole)."""
        seen: dict[str, int] = {}  # key -> the record's mtime when sent: a record is written
        while True:                # at the render and again once judged; each is shown
            ended = proc.poll() is not None
            run = run or _run_of(set(self._runs()) - before)
            if run is not None:
                for path in sorted(run.glob("loop_*_iter_*.json")):
                    try:
                        changed = path.stat().st_mtime_ns
                    except OSError:
                        continue
                    if KEY.match(path.stem) and seen.get(path.stem) != changed:
                        seen[path.stem] = changed
                        self.send(EVENT, {"name": name, "run": run.name, "card": card(path)})
            if ended:
                self.send(EVENT, {"name": name, "run": run.name if run else None,
                                  "ended": summary(run) if run else {"status": "failed"}})
                with self.lock:
                    if self.running.get(name) is proc:
                        del self.running[name]
                return
            time.sleep(0.1)


def find_command() -> list[str] | None:
    """The imitatoes command: IMITATOES_BIN (set where ComfyUI starts), else PATH, else the
    link install.sh makes."""
    named = os.environ.get("IMITATOES_BIN")
    candidates = [named] if named else [shutil.which("imitatoes"),
                                        str(Path.home() / ".local" / "bin" / "imitatoes")]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    return [found] if found else None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("IMITATOES_RUNS", None)  # the sidebar says where its runs go
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_of(new: set[Path]) -> Path | None:
    return max(new) if new else None


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise Refused("a name is 1 to 64 letters, digits, - or _, starting with a letter or "
                      "digit")
    return name


def check_url(url: object) -> str:
    if not isinstance(url, str) or not URL.match(url):
        raise Refused("the Ollama URL is http(s)://host:port, nothing more")
    return url.rstrip("/")


def check_graph(graph: object) -> dict:
    if not isinstance(graph, dict) or not 0 < len(graph) <= 2000 or not all(
            isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("class_type"), str)
            and isinstance(v.get("inputs", {}), dict) for k, v in graph.items()):
        raise Refused("the graph is not a ComfyUI prompt (API format)")
    return graph


def _text(value: object, what: str, most: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > most:
        raise Refused(f"{what}: a text of 1 to {most} characters")
    return value.strip()


def _count(value: object, what: str, most: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise Refused(f"{what}: a whole number from 1 to {most}")
    return value


def spec_from(body: object) -> tuple[dict, dict, str]:
    """The spec a start request asks for, every field checked; unknown fields are refused."""
    if not isinstance(body, dict) or set(body) - START_FIELDS:
        raise Refused(f"fields allowed: {', '.join(sorted(START_FIELDS))}")
    name, graph = check_name(body.get("name")), check_graph(body.get("prompt"))
    requirements = body.get("requirements")
    if not isinstance(requirements, list) or not 1 <= len(requirements) <= 50:
        raise Refused("requirements: a list of 1 to 50")
    bindings = body.get("bindings")
    if not isinstance(bindings, dict) or not 1 <= len(bindings) <= 20 or not all(
            isinstance(k, str) and NODE_PATH.match(k) and v in PARAMETERS
            and k.split(".")[0] in graph for k, v in bindings.items()):
        raise Refused("bindings: node paths of this graph (6.inputs.text) to prompt, negative, "
                      "seed, cfg or steps")
    if "prompt" not in bindings.values():
        raise Refused("bindings: nothing is bound to the prompt")
    model = body.get("model")
    if not isinstance(model, str) or not MODEL.match(model):
        raise Refused("model: an Ollama model name (qwen2.5vl:7b)")
    start = body.get("start") or {}
    if not isinstance(start, dict) or set(start) - {"prompt", "negative"}:
        raise Refused("start: prompt and negative only")
    spec = {
        "name": name, "goal": _text(body.get("goal"), "goal", 4000),
        "requirements": [_text(r, "a requirement", 500) for r in requirements],
        "workflow": "workflow.api.json", "bindings": bindings,
        "start": {"prompt": _text(start.get("prompt", _bound_text(graph, bindings)),
                                  "start prompt", 10000),
                  **({"negative": start["negative"][:2000]}
                     if isinstance(start.get("negative"), str) else {})},
        "critic": {"model": model, "url": check_url(body.get("ollama_url"))},
        "limits": {"iterations_per_loop": _count(body.get("iterations"), "iterations", 20),
                   "max_loops": _count(body.get("loops"), "loops", 10)},
    }
    if body.get("bounds"):
        spec["bounds"] = _bounds(body["bounds"])
    return spec, graph, name


def _bounds(bounds: object) -> dict:
    """The bounds init proposed (widened to hold the graph's own values): numbers only, on
    the names a spec has; validate checks the rest."""
    if not isinstance(bounds, dict) or not all(
            isinstance(v, dict) and set(v) <= BOUNDS.get(k, set()) and all(
                isinstance(n, int | float) and not isinstance(n, bool) for n in v.values())
            for k, v in bounds.items()):
        raise Refused("bounds: numbers for cfg, steps, prompt and negative only")
    return bounds


def _bound_text(graph: dict, bindings: dict) -> object:
    path = next(k for k, v in bindings.items() if v == "prompt")
    node, _, field = path.partition(".inputs.")
    return graph[node].get("inputs", {}).get(field)


def summary(run: Path) -> dict:
    try:
        state = json.loads((run / "state.json").read_text())
    except (OSError, ValueError):
        state = {}
    best = state.get("best") if isinstance(state.get("best"), dict) else {}
    remembered = state.get("from_memory") if isinstance(state.get("from_memory"), list) else []
    return {"run": run.name, "status": state.get("status"), "loop": state.get("loop"),
            "last_loop": state.get("last_loop"), "renders": state.get("renders"),
            "best": best.get("key"), "score": best.get("score"),
            "memory": "; ".join(str(m) for m in remembered),  # where it started from
            "report": (run / "report.html").is_file()}


def card(path: Path) -> dict:
    """An iteration as the tab shows it; texts go to the page as data, never as markup."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"key": path.stem, "broken": True}
    critic = record.get("critic") if isinstance(record.get("critic"), dict) else {}
    verdict = critic.get("verdict") if isinstance(critic.get("verdict"), dict) else {}
    judged = record.get("requirements") if isinstance(record.get("requirements"), list) else []
    checklist = [{"requirement": str(c.get("requirement", ""))[:300], "met": c.get("met") is True,
                  "observation": str(c.get("observation", ""))[:300]}
                 for c in judged if isinstance(c, dict)][:50]
    return {"key": path.stem, "score": record.get("score"),
            "done": bool(checklist) and all(c["met"] for c in checklist),
            "reason": str(verdict.get("reason", ""))[:500],
            "applied": [str(a)[:200] for a in record.get("applied") or []][:10],
            "checklist": checklist,
            "seconds": {k: v for k, v in (record.get("seconds") or {}).items()
                        if isinstance(v, int | float) and not isinstance(v, bool)}}


def ollama_models(url: str) -> dict:
    """The models the Ollama server lists, and which of them see images (/api/show)."""
    try:
        tags = _get_json(f"{url}/api/tags")
    except (OSError, ValueError) as exc:
        return {"url": url, "ok": False, "problem": f"Ollama is not reachable at {url} ({exc}): "
                "start it (ollama serve), or set the Ollama URL in ComfyUI's settings "
                "(Imitatoes)"}
    models = []
    for entry in (tags.get("models") or [])[:50]:
        name = str(entry.get("name", ""))
        try:
            shown = _get_json(f"{url}/api/show", {"model": name})
            vision = "vision" in (shown.get("capabilities") or [])
        except (OSError, ValueError):
            vision = False
        models.append({"name": name, "vision": vision})
    problem = "" if any(m["vision"] for m in models) else \
        "no vision model is pulled: ollama pull qwen2.5vl:7b"
    return {"url": url, "ok": not problem, "problem": problem, "models": models}


def _get_json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if body else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - http(s) checked
        answer = json.loads(resp.read(16 * 2**20))
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    return answer


# -- routes -------------------------------------------------------------------------------------
def add_routes(routes: web.RouteTableDef, sidebar: Sidebar) -> None:
    """Register the sidebar's routes on ComfyUI's (or, in tests, any) route table."""

    async def body(request: web.Request) -> dict:
        if request.content_length is None or request.content_length > MAX_BODY:
            raise Refused(f"a body of at most {MAX_BODY // 2**20} MiB, with its length")
        try:
            data = json.loads(await request.content.read(MAX_BODY + 1))
        except (ValueError, UnicodeDecodeError):
            raise Refused("the body is not JSON") from None
        if not isinstance(data, dict):
            raise Refused("the body is not a JSON object")
        return data

    def answer(work):
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return await work(request)
            except Refused as exc:
                return web.json_response({"error": str(exc)}, status=400)
        return handler

    # The work runs in a thread: it waits on the imitatoes command, which asks this very
    # server for its node definitions; on ComfyUI's event loop it would wait for itself.
    async def off(work, *args):
        return await asyncio.to_thread(work, *args)

    async def status(request):
        return web.json_response(await off(sidebar.status, request.query.get("ollama")))

    async def propose(request):
        return web.json_response(await off(sidebar.propose, (await body(request)).get("prompt")))

    async def start(request):
        return web.json_response(await off(sidebar.start, await body(request)))

    async def stop(request):
        return web.json_response(await off(sidebar.stop, (await body(request)).get("name")))

    async def resume(request):
        data = await body(request)
        return web.json_response(await off(sidebar.resume, data.get("name"), data.get("run"),
                                           str(data.get("instruction") or "")))

    async def save(request):
        return web.json_response(await off(sidebar.save, (await body(request)).get("name")))

    async def runs(request):
        return web.json_response(await off(sidebar.runs))

    async def cards(request):
        return web.json_response(await off(sidebar.cards, request.query.get("run")))

    async def image(request):
        return web.FileResponse(sidebar.image(request.query.get("run"), request.query.get("key")))

    async def report(request):
        return web.FileResponse(sidebar.run_dir(request.query.get("run")) / "report.html")

    for method, path, work in (("GET", "status", status), ("POST", "propose", propose),
                               ("POST", "start", start), ("POST", "stop", stop),
                               ("POST", "resume", resume), ("POST", "save", save),
                               ("GET", "runs", runs), ("GET", "run", cards),
                               ("GET", "image", image), ("GET", "report", report)):
        routes.route(method, f"/imitatoes/{path}")(answer(work))


def install() -> None:
    """In ComfyUI: the routes on its server, progress over its websocket."""
    import folder_paths  # ComfyUI's own modules, there when this runs inside it
    from server import PromptServer

    server = PromptServer.instance
    args = getattr(sys.modules.get("comfy.cli_args"), "args", None)
    port = getattr(args, "port", 8188)
    # where this ComfyUI answers: loopback, unless it listens on one address only
    listen = str(getattr(args, "listen", "127.0.0.1") or "127.0.0.1").split(",")[0].strip()
    host = "127.0.0.1" if listen in ("", "0.0.0.0", "::", "localhost") else listen
    host = f"[{host}]" if ":" in host else host
    sidebar = Sidebar(Path(folder_paths.get_output_directory()),
                      Path(folder_paths.get_user_directory()), f"http://{host}:{port}",
                      send=lambda event, data: server.send_sync(event, data))
    add_routes(server.routes, sidebar)
    server.add_on_prompt_handler(sidebar.noticed)
