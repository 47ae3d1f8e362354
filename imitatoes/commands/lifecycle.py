"""One run from start to end, whichever command asked for it (`run`, `resume`, `demo`,
`batch`, a Celery worker, a script): create or load its folder, check the servers, drive the
engine with the run log and the caller's listeners, write the report however the run ends, and
say how to continue. Every run folder gets the same files because only this module makes them."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imitatoes.clients.comfy import ComfyClient, client_for, renderer_for
from imitatoes.clients.critic import make_critic
from imitatoes.errors import ImitatoesError
from imitatoes.loop import binder, memory
from imitatoes.loop.engine import Engine
from imitatoes.loop.events import Listener
from imitatoes.loop.state import RunState, continued, first_state, within_limits
from imitatoes.runs import folder as runfolder
from imitatoes.runs import memory as memory_store
from imitatoes.runs import provenance, report
from imitatoes.runs.log import RunLog
from imitatoes.runs.report import ReportWriter
from imitatoes.spec import knobs as knob_rules
from imitatoes.spec import load as specs
from imitatoes.spec.model import Spec
from imitatoes.workflow import nodecheck


class RunInterrupted(ImitatoesError):
    """Ctrl-C or SIGTERM stopped the run; its folder is consistent."""

    exit_code = 130


class WorkflowRejected(ImitatoesError):
    """The workflow names models or values this ComfyUI does not have or accept."""

    exit_code = 2


def check(spec: Spec) -> dict[str, Any]:
    """Both servers, the workflow against ComfyUI's own node definitions, and the model,
    before the first render wastes anyone's time."""
    client = client_for(spec.comfyui, use_websocket=False)
    critic = make_critic(spec.critic)
    try:
        stats = client.system_stats()
        nodes = node_definitions(spec, client)
        found = misfits(spec, nodes, stats.get("system", {}).get("comfyui_version"))
        if found:
            raise WorkflowRejected(
                f"the workflow does not fit ComfyUI at {spec.comfyui.url}:\n  " +
                "\n  ".join(found) + "\nfix the workflow (or the spec's start values and knobs) "
                "and run "
                "again; `imitatoes doctor SPEC` shows the rest")
        return {"comfyui": stats.get("system", {}).get("comfyui_version", "?"),
                "stats": stats, "nodes": nodes, "jobs_api": client.has_jobs(),
                "critic": critic.check()}
    finally:
        client.close()
        critic.close()


def node_definitions(spec: Spec, client: ComfyClient) -> dict[str, Any]:
    """/object_info of each node class the workflow uses (a few small requests, not the whole
    catalogue, which is megabytes on a well-stocked ComfyUI)."""
    classes = sorted({str(n.get("class_type")) for n in spec.workflow.values()})
    return {c: client.object_info(c).get(c) for c in classes}


def misfits(spec: Spec, nodes: dict[str, Any], server_version: str | None) -> list[str]:
    """The start values and the knobs against the server's node definitions (nodecheck)."""
    return nodecheck.problems(binder.bind(spec, spec.start), nodes, server_version) + \
        knob_rules.server_problems(spec.knobs, spec.workflow, nodes)


def workflow_problems(spec: Spec) -> list[str]:
    """The bound workflow against the node definitions of the spec's ComfyUI (nodecheck)."""
    client = client_for(spec.comfyui, use_websocket=False)
    try:
        nodes = node_definitions(spec, client)
        return misfits(spec, nodes, client.system_stats().get("system", {}).get("comfyui_version"))
    finally:
        client.close()


@dataclass(frozen=True)
class Outcome:
    run_dir: Path
    state: RunState
    seconds: float

    @property
    def exit_code(self) -> int:
        """0 done, 3 stopped at the limits (or stalled)."""
        return 0 if self.state.status == "done" else 3

    def next_step(self) -> str:
        """How to take the run further, in one line."""
        if self.state.status == "done":
            return f'take it further with: imitatoes resume {self.run_dir} --instruction "..."'
        return (f"another loop budget: imitatoes resume {self.run_dir} (add --instruction "
                '"..." to steer the critic, or --set bounds...=... to widen the bounds)')


@dataclass
class Run:
    """A run folder with its spec and saved state (None: nothing has run yet)."""

    spec: Spec
    dir: Path
    state: RunState | None = None
    checked: bool = False  # the servers answered for this spec
    notes: tuple[str, ...] = ()  # what resuming changed (new limits or bounds)
    recorded: bool = False  # provenance gathered for this execution
    servers: dict[str, Any] | None = None  # what the check found (provenance reuses it)
    where: str = ""  # a new run: which rule chose its folder (the first line a run prints)
    seed: int | None = None  # the engine's own draws (new seeds, candidates): None is random;
    # benchmarks fix it so their figures repeat run to run
    remembered: memory_store.Loaded | None = None  # memory across runs, read once

    @staticmethod
    def begin(spec: Spec, runs_root: Path | None = None, check_servers: bool = True) -> Run:
        """A new run: the servers are checked before a folder is made for it."""
        found = check(spec) if check_servers else None
        return Run(spec, runfolder.create(spec, runs_root), None, checked=check_servers,
                   servers=found, where="--runs-dir" if runs_root else spec.output_why)

    def prepare(self) -> list[str]:
        """Before the first render of this execution: the servers checked, and what makes the
        images recorded (provenance.json); returns what changed since the run last went."""
        if not self.checked:
            self.servers = check(self.spec)
            self.checked = True
        if self.recorded:
            return []
        self.recorded = True
        runfolder.write_servers(self.dir, self.spec)  # what resume, replay and report use
        return provenance.record(self.spec, self.dir, self.servers)

    def use_servers(self, comfyui: str, critic: str, whose: str) -> None:
        """Go on other servers than the run last used (a batch backend, a cluster worker's
        own), and say so in the notes."""
        c = self.spec
        if (comfyui, critic) == (c.comfyui.url, c.critic.url):
            return
        self.notes = (*self.notes, f"on {whose}: ComfyUI {comfyui}, critic {critic} (the run "
                      f"last used ComfyUI {c.comfyui.url}, critic {c.critic.url})")
        self.spec = dataclasses.replace(
            c, comfyui=dataclasses.replace(c.comfyui, url=comfyui),
            critic=dataclasses.replace(c.critic, url=critic))
        self.checked = False

    @staticmethod
    def reopen(run_dir: Path, overrides: list[str] | None = None,
               env: dict[str, str] | None = None) -> Run:
        """A run folder as it was left, for `resume`: its spec.yaml read again (edits and
        --set count), the saved state brought under it, and a crash's loose ends tied up."""
        state = runfolder.read_state(run_dir)
        spec = runfolder.load_spec(run_dir, overrides, env)
        state, notes = within_limits(state, spec)
        state.renders = max(state.renders, runfolder.renders_on_disk(run_dir))
        state.rendered = {**runfolder.fingerprints(run_dir), **state.rendered}
        return Run(spec, run_dir, state, notes=notes)

    @staticmethod
    def refresh(run_dir: Path, overrides: list[str] | None = None,
                env: dict[str, str] | None = None) -> Run:
        """`resume --refresh`: the spec and workflow read again from where the run came from
        (a fix made there takes effect), validated, written into the folder, with every
        difference listed in the notes."""
        runfolder.read_state(run_dir)  # a run folder, before anything is written into it
        fresh = specs.load(runfolder.source_spec(run_dir), overrides, env)
        before = runfolder.load_spec(run_dir, [], env)
        changed = [f"spec: {d}" for d in runfolder.differences(
            runfolder.snapshot(before), runfolder.snapshot(fresh))]
        changed += [f"workflow: node {d}" for d in runfolder.differences(
            dict(before.workflow), dict(fresh.workflow))]
        runfolder.write_start(run_dir, runfolder.snapshot(fresh), dict(fresh.workflow))
        run = Run.reopen(run_dir, overrides, env)
        run.notes = (*(changed or ["spec and workflow: no differences"]), *run.notes)
        return run

    @staticmethod
    def adopt(run_dir: Path, spec_data: dict[str, Any], workflow: dict[str, Any]) -> Run:
        """The folder for a spec sent from elsewhere (a Celery worker): made on first delivery,
        reopened on a later one."""
        if (run_dir / runfolder.STATE).is_file():
            return Run.reopen(run_dir, env={})
        runfolder.write_start(run_dir, spec_data, workflow)
        return Run(runfolder.load_spec(run_dir, env={}), run_dir)

    @property
    def resume_command(self) -> str:
        return f"imitatoes resume {self.dir}"

    def execute(self, listeners: Iterable[Listener] = (), instruction: str = "") -> Outcome:
        """Drive the run to its end. The report is written however it ends; an error leaves
        the folder consistent and carries the command that continues the run."""
        self.prepare()
        state = self._starting_state(instruction)
        started = time.monotonic()
        reporter = ReportWriter(self.dir)
        recall = self._recall(state)
        try:
            with runfolder.owned(self.dir):
                self.state = self._drive(state, [reporter, *listeners], recall.critic)
            self._learn(self.state)
        except KeyboardInterrupt:
            self.state = state
            stop = RunInterrupted("interrupted")
            stop.hint = f"continue with: {self.resume_command}"
            raise stop from None
        except ImitatoesError as exc:
            self.state = state
            exc.hint = f"the run folder is consistent; after fixing this, continue with: " \
                       f"{self.resume_command} (add --refresh if you fixed the spec or " \
                       "workflow it came from)"
            raise
        finally:
            if not reporter.ended:  # the engine stopped before it could say how it ended
                self.write_report()
        return Outcome(self.dir, self.state, time.monotonic() - started)

    def tidy(self) -> None:
        """What a kill after the end and before the last files left undone: final.png and
        the report."""
        state = self.state
        if state is None:
            return
        runfolder.write_state(self.dir, state)  # with the render count corrected on reopen
        chosen = state.done_key or (state.best.key if state.best else None)
        if chosen and not (self.dir / runfolder.FINAL).is_file():
            runfolder.copy_final(self.dir, chosen)
        if not (self.dir / runfolder.REPORT).is_file():
            self.write_report()

    def write_report(self) -> Path | None:
        """report.html; a report that cannot be written never hides how the run ended."""
        with contextlib.suppress(ImitatoesError, OSError, ValueError):
            return report.write(self.dir)
        return None

    def _recall(self, state: RunState) -> memory.Recall:
        """What memory across runs offers this run: a new run starts from it (and says so in
        state.from_memory, with any problem reading the store); every run's critic sees it."""
        if self.spec.memory is None:
            return memory.Recall(state.params, (), ())
        if self.remembered is None:
            self.remembered = memory_store.read(self.spec.memory)
        recall = memory.recall(self.spec, self._renderer(), self.remembered.entries)
        if state.renders == 0 and not state.history:
            state.params = recall.params
            state.from_memory = (*filter(None, [self.remembered.note]), *recall.applied)
        return recall

    def _renderer(self) -> str:
        """Memory keeps what the stand-ins taught apart from what a real ComfyUI did."""
        version = str((self.servers or {}).get("comfyui", ""))
        return "stand-in" if "imitatoes stand-in" in version else "comfyui"

    def _learn(self, state: RunState) -> None:
        """A run that ended (done or at its limits) adds what it learned to memory; a store
        that cannot be written loses only that."""
        if self.spec.memory is None or not (self.remembered and self.remembered.writable) \
                or state.status not in ("done", "limits") or state.best is None:
            return
        best = state.best
        entry = memory.entry(self.spec, self._renderer(), str(self.dir.resolve()),
                             state.history, best.params, best.met)
        with contextlib.suppress(OSError):
            memory_store.add(self.spec.memory, entry)

    def _starting_state(self, instruction: str) -> RunState:
        if self.state is None:
            return first_state(self.spec)
        if instruction or self.state.status in ("done", "limits"):
            return continued(self.state, self.spec, instruction)
        self.state.status = "running"
        return self.state

    def _drive(self, state: RunState, listeners: Iterable[Listener],
               remembered: tuple[str, ...] = ()) -> RunState:
        c = self.spec.comfyui
        client = client_for(c)
        # each prompt says which run folder it belongs to, so ComfyUI's Imitatoes sidebar can
        # show a run started here from a terminal
        if not client.prefix:  # a local path is nobody's business on Comfy Cloud
            client.extra_data = {"imitatoes": {"run": str(self.dir.resolve())}}
        critic = make_critic(self.spec.critic)
        verifier = make_critic(dataclasses.replace(self.spec.critic,
                                                   model=self.spec.critic.verifier)) \
            if self.spec.critic.verifier else None
        engine = Engine(self.spec, renderer_for(c, client),
                        critic, [RunLog(self.dir), *listeners],
                        rng=random.Random(self.seed),
                        reuse=lambda key: runfolder.saved_render(self.dir, key,
                                                                 c.max_image_pixels),
                        verifier=verifier, remembered=remembered)
        try:
            return engine.run(state)
        finally:
            client.close()
            critic.close()
            if verifier:
                verifier.close()
