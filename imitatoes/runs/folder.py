"""The run folder on disk: its layout, and the one place its files are read and written.

    spec.yaml, workflow.json     the spec as run (self-contained) and its workflow
    loop_01_iter_01.png / .json  each render and its IterationRecord
    state.json                   RunState.to_dict(), after every step
    events.jsonl, final.png, report.html

Every file is written atomically, so a killed process leaves the old file or the new one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from imitatoes.clients.imagecheck import MAX_PIXELS, NotAnImage
from imitatoes.clients.imagecheck import check as check_image
from imitatoes.errors import ImitatoesError
from imitatoes.loop.checklist import Item
from imitatoes.loop.patch import Refusal
from imitatoes.loop.ports import Saved
from imitatoes.loop.state import RefineState, RunState, checked_key, fingerprint
from imitatoes.loop.verdict import Attempt, Changes, Check, Verdict
from imitatoes.spec import load as specs
from imitatoes.spec import template
from imitatoes.spec.model import Params, Spec, as_dict

STATE = "state.json"
EVENTS = "events.jsonl"
REPORT = "report.html"
FINAL = "final.png"
REJECTED = "rejected"
LOCK = ".lock"
CANDIDATE = "_c"  # loop_01_iter_01_c2: a candidate of loop_01_iter_01 (search.candidates)
SOURCE = "source.json"
SERVERS = "servers.json"  # the servers the run last went on: resume, replay and report use them


class RunFolderError(ImitatoesError):
    pass


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target and rename over it. (No fsync: it cost 3 ms a write, 10% of our
    overhead, and guards only against power loss, after which resume starts from an older,
    consistent state.)"""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two writers never share one
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise RunFolderError(f"cannot write {path}: {exc.strerror or exc}; free some space or "
                             f"fix the permissions, then resume with: imitatoes resume "
                             f"{path.parent}") from None


class RunFolderBusy(RunFolderError):
    pass


@contextlib.contextmanager
def owned(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for one process: a second `resume` of the same folder (or a batch
    that moved it) is told who has it instead of rendering the same iteration twice. The lock
    is the kernel's (flock), so a killed holder never leaves it stale."""
    path = run_dir / LOCK
    fd = _lock(path, run_dir)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"imitatoes (pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC)\n".encode())
        _sweep(run_dir)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still held: whoever opens the path next makes a new lock
        os.close(fd)  # closing releases the lock


def _lock(path: Path, run_dir: Path) -> int:
    """An open, locked descriptor of `path`. A lock taken on a file its holder has just
    removed is no lock: then try again on the new one."""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunFolderError(f"cannot open {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunFolderBusy(f"{run_dir} is in use by {holder}; wait for that run to end, "
                                "or stop it, then resume") from None
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        os.close(fd)
    raise RunFolderBusy(f"{run_dir} changed hands too often to lock; try again")


def _sweep(run_dir: Path) -> None:
    """Temporary files of writers that were killed mid-write (their pid is in the name)."""
    for tmp in run_dir.glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def renders_on_disk(run_dir: Path) -> int:
    """Saved renders: a kill between a PNG and the state after it leaves the state one short."""
    return sum(1 for _ in run_dir.glob("loop_*_iter_*.png"))


def to_json(data: Any, indent: int | None = 2) -> bytes:
    """Strict JSON (no NaN or Infinity, which other tools cannot read)."""
    return (json.dumps(data, indent=indent, ensure_ascii=False, default=str, allow_nan=False)
            + "\n").encode()


@dataclass(frozen=True)
class CriticRecord:
    """What the critic was told and answered for one image."""

    prompt: str
    answers: tuple[Attempt, ...]
    verdict: Verdict | None
    error: str
    image_sent: dict[str, Any]  # bytes, mime, width, height

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "answers": [as_dict(a) for a in self.answers],
                "verdict": as_dict(self.verdict) if self.verdict else None, "error": self.error,
                "image_sent": self.image_sent}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> CriticRecord:
        v = d.get("verdict")
        verdict = Verdict(v["done"], _changes(v["changes"]), v["reason"],
                          tuple(Check(**c) for c in v["checklist"]), v["score"],
                          v["claimed_done"], tuple(_changes(a) for a in v.get("alternatives", ())
                                                   )) if v else None
        return CriticRecord(d["prompt"], tuple(Attempt(**a) for a in d["answers"]), verdict,
                            d.get("error", ""), d.get("image_sent", {}))


def _changes(d: dict[str, Any]) -> Changes:
    knobs = d.get("knobs") or {}
    return Changes(**{**d, "knobs": tuple(knobs.items())})


@dataclass
class IterationRecord:
    """loop_01_iter_01.json: how one image was made, what the critic said, what changed.
    Written when the render arrives (before its PNG), again when the verdict is applied."""

    key: str
    loop: int
    iteration: int
    params: Params
    prompt_id: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # render, critique
    critic: CriticRecord | None = None
    applied: list[str] | None = None  # None until the verdict was applied
    score: float | None = None
    reverted_to: str | None = None
    refused: list[Refusal] = field(default_factory=list)
    next_params: Params | None = None
    requirements: list[Item] = field(default_factory=list)  # each one as the critic judged it
    done_rejected: list[str] | None = None  # a done claim the strict check did not confirm
    candidates: list[dict[str, Any]] | None = None  # search.candidates: key, seed, score each
    head_to_head: dict[str, Any] | None = None  # search.head_to_head: against, order, winner
    refine: dict[str, Any] | None = None  # refine mode: from (the key), image, denoise
    extra: list[Check] = field(default_factory=list)  # the critic's items no requirement's

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.key, "loop": self.loop, "iteration": self.iteration,
                             "params": as_dict(self.params), "prompt_id": self.prompt_id,
                             "seconds": dict(self.seconds)}
        if self.critic is not None:
            d["critic"] = self.critic.to_dict()
        if self.applied is not None:
            d.update(score=self.score, reverted_to=self.reverted_to, applied=list(self.applied),
                     refused=[as_dict(r) for r in self.refused],
                     next_params=as_dict(self.next_params) if self.next_params else None,
                     requirements=[as_dict(i) for i in self.requirements])
            if self.extra:
                d["extra"] = [as_dict(c) for c in self.extra]
            if self.done_rejected is not None:
                d["done_rejected"] = list(self.done_rejected)
        if self.candidates is not None:
            d["candidates"] = [dict(c) for c in self.candidates]
        if self.head_to_head is not None:
            d["head_to_head"] = dict(self.head_to_head)
        if self.refine is not None:
            d["refine"] = dict(self.refine)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> IterationRecord:
        nxt = d.get("next_params")
        if not all(isinstance(d[n], int) and d[n] >= 1 for n in ("loop", "iteration")):
            raise ValueError("loop and iteration are not whole numbers")
        return IterationRecord(
            checked_key(d["key"]), d["loop"], d["iteration"], Params.from_dict(d["params"]),
            d.get("prompt_id", ""),
            dict(d.get("seconds", {})),
            CriticRecord.from_dict(d["critic"]) if d.get("critic") else None,
            d.get("applied"), d.get("score"), d.get("reverted_to"),
            [Refusal(**r) for r in d.get("refused", [])], Params.from_dict(nxt) if nxt else None,
            [Item(**i) for i in d.get("requirements", [])], d.get("done_rejected"),
            d.get("candidates"), d.get("head_to_head"), d.get("refine"),
            [Check(**c) for c in d.get("extra", [])])

    @property
    def made_by(self) -> str:
        """What decided its image (state.fingerprint): params and the refine state."""
        try:
            refine = RefineState.from_dict(self.refine) if self.refine else None
        except (KeyError, TypeError, ValueError):
            refine = None
        return fingerprint(self.params, refine)

    @property
    def reason(self) -> str:
        """The critic's reason, or why there was no verdict."""
        if self.critic is None:
            return ""
        return self.critic.verdict.reason if self.critic.verdict else self.critic.error


def write_record(run_dir: Path, record: IterationRecord) -> None:
    write_atomic(run_dir / f"{record.key}.json", to_json(record.to_dict()))


def read_record(run_dir: Path, key: str) -> IterationRecord | None:
    """The record of one iteration, or None when it is missing or was never finished."""
    try:
        record = IterationRecord.from_dict(json.loads((run_dir / f"{key}.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return record if record.key == key else None  # a record is named for its iteration


def records(run_dir: Path, candidates: bool = False) -> list[IterationRecord]:
    """Every readable iteration record, in order (a half-written one from a crash is left out:
    the report shows what is whole); the candidates that were not chosen only if asked."""
    found = (read_record(run_dir, p.stem) for p in sorted(run_dir.glob("loop_*_iter_*.json"))
             if candidates or CANDIDATE not in p.stem)
    return [r for r in found if r is not None]


def choose(run_dir: Path, key: str, chosen: str, candidates: list[dict[str, Any]]
           ) -> IterationRecord:
    """The chosen candidate's files become the iteration's: the record first (naming the
    candidates), then the image; the other candidates stay beside it."""
    record = read_record(run_dir, chosen)
    if record is None:
        raise RunFolderError(f"{run_dir / (chosen + '.json')} is missing or damaged; resume "
                             "to judge the iteration's candidates again")
    record.key, record.candidates = key, candidates
    write_record(run_dir, record)
    try:
        os.replace(run_dir / f"{chosen}.png", run_dir / f"{key}.png")
        if (run_dir / f"{chosen}_mask.png").is_file():  # refine.repair: its mask goes along
            os.replace(run_dir / f"{chosen}_mask.png", run_dir / f"{key}_mask.png")
        (run_dir / f"{chosen}.json").unlink(missing_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot move {chosen}.png in {run_dir}: {exc.strerror}") from None
    return record


def fingerprints(run_dir: Path) -> dict[str, str]:
    """What each finished iteration's image was decided by (for runs saved before state.json
    kept it), candidates included."""
    out: dict[str, str] = {}
    for record in records(run_dir, candidates=True):
        out.setdefault(record.made_by, record.key)
    return out


def write_state(run_dir: Path, state: RunState) -> None:
    write_atomic(run_dir / STATE, to_json(state.to_dict(), indent=None))


def read_state(run_dir: Path) -> RunState:
    path = run_dir / STATE
    if not path.is_file():
        raise RunFolderError(f"{run_dir} is not a run folder (no {STATE}); give the folder a "
                             "run printed when it started")
    try:
        return RunState.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise RunFolderError(f"{path} is damaged ({exc}); the iteration files beside it "
                             "are intact") from None


REFINE_WORKFLOW = "refine_workflow.json"  # refine.workflow, when the spec names one


def snapshot(spec: Spec) -> dict[str, Any]:
    """The spec as run, self-contained: the workflow and the template sit beside it."""
    data = json.loads(json.dumps(spec.data))
    data["workflow"] = "workflow.json"
    if isinstance(data.get("refine"), dict) and data["refine"].get("workflow"):
        data["refine"]["workflow"] = REFINE_WORKFLOW
    text = spec.critic.prompt_template
    data.setdefault("critic", {})["prompt_template"] = text if template.is_inline(text) \
        else text + "\n"
    data.pop("output", None)
    return data


def create(spec: Spec, root: Path | None = None) -> Path:
    """A new run folder named for the time (UTC) and the spec, with the spec and workflow."""
    root = root or spec.output_dir
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        run_dir = root / (f"{stamp}_{spec.name}" + (f"_{n}" if n else ""))
        try:
            run_dir.mkdir(parents=True)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunFolderError(f"cannot create a run folder in {root}: {exc.strerror}; "
                                 "choose another with --runs-dir or IMITATOES_RUNS") from None
    write_start(run_dir, snapshot(spec), dict(spec.workflow))
    if spec.refine is not None and (spec.data.get("refine") or {}).get("workflow"):
        write_atomic(run_dir / REFINE_WORKFLOW, to_json(dict(spec.refine.graph.workflow)))
    if spec.path.is_file():  # where it came from, for `resume --refresh` and provenance
        write_atomic(run_dir / SOURCE, to_json({"spec": str(spec.path.resolve()),
                                                "workflow": str(spec.workflow_path.resolve())}))
    return run_dir


@dataclass(frozen=True)
class Source:
    """The files a run was started from (source.json)."""

    spec: Path
    workflow: Path | None  # None: a run folder made before it was recorded


def source_of(run_dir: Path) -> Source | None:
    try:
        d = json.loads((run_dir / SOURCE).read_text())
        workflow = d.get("workflow")
        return Source(Path(str(d["spec"])), Path(str(workflow)) if workflow else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def source_spec(run_dir: Path) -> Path:
    """The spec file a run was started from (`resume --refresh` reads it again)."""
    found = source_of(run_dir)
    if found is None:
        raise RunFolderError(f"{run_dir} does not say which spec file it came from (it was "
                             "built in code, or by an older imitatoes); edit its spec.yaml and "
                             "workflow.json instead, then resume")
    path = found.spec
    if not path.is_file():
        raise RunFolderError(f"the spec {run_dir} came from, {path}, is gone; edit the run's "
                             "own spec.yaml and workflow.json instead, then resume")
    return path


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    """What changed between two JSON-like values, one line per changed leaf."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str)
                for line in differences(old.get(key), new.get(key),
                                        f"{where}.{key}" if where else str(key))]
    if old == new:
        return []
    return [f"{where}: {_brief(old)} -> {_brief(new)}"]


def _brief(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else "(none)"
    return text if len(text) <= 80 else text[:77] + "..."


def write_start(run_dir: Path, spec_data: dict[str, Any], workflow: dict[str, Any]) -> None:
    """The two files a run folder starts with: the spec as run and its workflow."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create {run_dir}: {exc.strerror}") from None
    write_atomic(run_dir / "spec.yaml", yaml.safe_dump(spec_data, sort_keys=False,
                                                       allow_unicode=True).encode())
    write_atomic(run_dir / "workflow.json", to_json(workflow))


def load_spec(run_dir: Path, overrides: list[str] | None = None,
              env: Mapping[str, str] | None = None) -> Spec:
    """The spec as run, on the servers it last went on (servers.json) unless the environment
    (IMITATOES_COMFY_URL, IMITATOES_OLLAMA_URL) or `overrides` name others; `env` None
    reads the environment."""
    env = os.environ if env is None else env
    remembered = read_servers(run_dir)
    base = [] if remembered is None else \
        [f"{where}={url}" for where, url, variable in (
            ("comfyui.url", remembered.comfyui, "IMITATOES_COMFY_URL"),
            ("critic.url", remembered.critic, "IMITATOES_OLLAMA_URL")) if not env.get(variable)]
    return specs.load(run_dir / "spec.yaml", [*base, *(overrides or [])], env)


@dataclass(frozen=True)
class Servers:
    comfyui: str
    critic: str


def write_servers(run_dir: Path, spec: Spec) -> None:
    write_atomic(run_dir / SERVERS, to_json({"comfyui": spec.comfyui.url,
                                             "critic": spec.critic.url}))


def read_servers(run_dir: Path) -> Servers | None:
    """The URLs of servers.json; None when it is missing or not two http(s) URLs."""
    try:
        d = json.loads((run_dir / SERVERS).read_text())
        found = Servers(d["comfyui"], d["critic"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    urls = (found.comfyui, found.critic)
    if not all(isinstance(u, str) and u.startswith(("http://", "https://")) and
               not any(c.isspace() for c in u) for u in urls):
        return None
    return found


def copy_final(run_dir: Path, key: str) -> None:
    """final.png: a copy of the chosen render (the done one, or the best)."""
    source = run_dir / f"{key}.png"
    if not source.is_file():
        return
    tmp = run_dir / f".{FINAL}.{os.getpid()}.tmp"
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, run_dir / FINAL)
    except OSError as exc:
        raise RunFolderError(f"cannot write {run_dir / FINAL}: {exc.strerror}") from None


def keep_rejected(run_dir: Path, key: str, data: bytes, why: str) -> Path:
    """An answer that is not a render, kept for a person to look at: rejected/<key>-N.bin with
    a .txt beside it saying why. Never under a render's name."""
    folder = run_dir / REJECTED
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create {folder}: {exc.strerror}") from None
    n = 1 + sum(1 for _ in folder.glob(f"{key}-*.bin"))
    path = folder / f"{key}-{n}.bin"
    write_atomic(path, data)
    write_atomic(path.with_suffix(".txt"), (why + "\n").encode())
    return path


def saved_render(run_dir: Path, key: str, max_pixels: int = MAX_PIXELS) -> Saved | None:
    """A render saved before a crash, with the params it was made with (its record is written
    before the PNG, so a PNG without a readable record was never finished). One that is not a
    whole image (saved by an older version, or damaged on disk) is moved to rejected/ and
    rendered again."""
    png = run_dir / f"{key}.png"
    record = read_record(run_dir, key)
    if record is None or not png.is_file():
        return None
    try:
        data = png.read_bytes()
    except OSError:
        return None
    try:
        check_image(data, max_pixels, decode=True)
    except NotAnImage as exc:
        keep_rejected(run_dir, key, data, f"{png.name} was {exc}; rendered again on resume")
        png.unlink(missing_ok=True)
        return None
    return Saved(data, record.params)
