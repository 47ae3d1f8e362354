"""The loop: render, critique, patch, again; until done or the limits. Plain Python: it takes
a renderer and a critic, owns the run's state and tells listeners what happens as events.
It never touches the network or the disk itself."""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from PIL import Image

from imitatoes.errors import ImitatoesError
from imitatoes.loop import binder, checklist, patch, refine_policy
from imitatoes.loop import events as ev
from imitatoes.loop import prompts as critic_prompt
from imitatoes.loop import regions as repair_rules
from imitatoes.loop.events import Listener
from imitatoes.loop.ports import Critic, Rendered, Renderer, RenderRejected
from imitatoes.loop.state import Best, RunState, Tried, key
from imitatoes.loop.verdict import Changes, Judgement
from imitatoes.spec.model import Params, Spec
from imitatoes.workflow import refine_graph as refine

MAX_CRITIC_FAILURES = 3  # in a row: the critic is not working, stop instead of burning renders


class CriticFailing(ImitatoesError):
    pass


class Engine:
    def __init__(self, spec: Spec, renderer: Renderer, critic: Critic,
                 listeners: Iterable[Listener] = (), rng: random.Random | None = None,
                 reuse: Callable[[str], tuple[bytes, Params] | None] | None = None,
                 verifier: Critic | None = None) -> None:
        self.spec, self.renderer, self.critic = spec, renderer, critic
        self.verifier = verifier or critic  # checks done claims (search.verify_done)
        self.listeners = list(listeners)
        self.rng = rng or random.Random()
        # A render saved before a crash (image and the params it was made with), judged
        # instead of being rendered again.
        self.reuse = reuse or (lambda _key: None)
        self.mask: bytes | None = None  # the repair mask of the render under way

    def emit(self, event_type: type[ev.Event], at: RunState, **fields: object) -> None:
        event = event_type(loop=at.loop, iteration=at.iteration, **fields)
        for listener in self.listeners:
            listener(event)

    def run(self, state: RunState) -> RunState:
        self.emit(ev.RunStarted, state, state=state.snapshot())
        try:
            while state.status == "running":
                self._iteration(state)
        except KeyboardInterrupt:
            state.status = "interrupted"
            self.renderer.interrupt()
            self.emit(ev.Interrupted, state, state=state.snapshot())
            raise
        except ImitatoesError as exc:
            state.status = "failed"
            self.emit(ev.Failed, state, state=state.snapshot(), message=str(exc))
            raise
        return state

    def _iteration(self, state: RunState) -> None:
        if state.iteration == 0:
            self._start_loop(state)
        state.iteration += 1
        state.in_progress = True
        refine_policy.enter(self.spec.refine, state)
        k = key(state.loop, state.iteration)
        saved = self.reuse(k)
        if saved:
            state.params = saved[1]
        elif self.spec.seed.policy == "random":
            state.params = replace(state.params, seed=patch.new_seed(self.rng))
        params = state.params
        self.emit(ev.IterationStarted, state, key=k, params=params)
        if (self.spec.search.candidates > 1 or state.proposals) and not saved:
            params, rendered, prompt, judgement, items = self._candidates(state, k, params)
        else:
            rendered, prompt, judgement, items = self._look(state, k, params, saved)
        if judgement.verdict and judgement.verdict.done and self.spec.search.verify_done:
            judgement, items = self._verify(rendered.image, params, state, k, judgement, items)
        self.emit(ev.Judged, state, key=k, judgement=judgement, prompt=prompt)
        self._apply(state, k, params, judgement, items, rendered.image)
        state.pending, state.in_progress = None, False
        self._next(state, k)

    def _look(self, state: RunState, k: str, params: Params, saved: tuple[bytes, Params] | None,
              ticket: str | None = None
              ) -> tuple[Rendered, str, Judgement, tuple[checklist.Item, ...]]:
        """One image: rendered (or collected, when queued, or the one saved before a crash)
        and critiqued."""
        rendered = self._render(state, k, params, saved[0] if saved else None, ticket)
        if self.spec.comfyui.free_before_critique:
            self._free(state, k, "comfyui", self.renderer.free)
        self.emit(ev.Critiquing, state, key=k)
        prompt = critic_prompt.with_regions(critic_prompt.with_proposals(
            critic_prompt.critic_prompt(self.spec, params, state.loop, state.iteration,
                                        state.history, state.instructions),
            self.spec.search.proposals), self.spec.critic.regions)
        judgement, items = self._critique(rendered.image, prompt, state)
        return rendered, prompt, judgement, items

    def _candidates(self, state: RunState, k: str, params: Params
                    ) -> tuple[Params, Rendered, str, Judgement, tuple[checklist.Item, ...]]:
        """search.candidates and search.proposals: the parameters, the critic's alternative
        changes to them (proposals), then the parameters with new seeds up to K, each rendered
        and judged (saved ones judged again, never rendered again); the best goes on under the
        iteration's own name."""
        variants = [params, *state.proposals]
        state.proposals = []
        plan = self._plan(state, k, params, variants)
        # All at once, so ComfyUI renders the next while the critic judges the last; not when
        # the two take turns on one GPU (they would fight over it).
        one_gpu = self.spec.critic.unload_before_render or self.spec.comfyui.free_before_critique
        tickets = {} if one_gpu else {ckey: self.renderer.queue(self._workflow(state, cparams))
                                      for ckey, cparams, saved in plan if saved is None}
        tried = []
        try:
            for ckey, cparams, saved in plan:
                look = self._look(state, ckey, cparams, saved, tickets.get(ckey))
                self.emit(ev.Judged, state, key=ckey, judgement=look[2], prompt=look[1])
                score = look[2].verdict.score if look[2].verdict else None
                self.emit(ev.CandidateJudged, state, key=ckey, score=score)
                tried.append((ckey, cparams, score, look))
        except ImitatoesError:
            self.renderer.interrupt()  # leave no queued candidate rendering for nobody
            raise
        best = max(tried, key=lambda t: -1.0 if t[2] is None else t[2])  # the first on a tie
        self.emit(ev.CandidateChosen, state, key=k, chosen=best[0],
                  candidates=tuple((t[0], t[1].seed, t[2]) for t in tried))
        state.pending = {"key": k, "prompt_id": best[3][0].prompt_id}
        rendered, prompt, judgement, items = best[3]
        return best[1], rendered, prompt, judgement, items

    def _plan(self, state: RunState, k: str, params: Params, variants: list[Params]
              ) -> list[tuple[str, Params, tuple[bytes, Params] | None]]:
        """Each candidate's key, parameters and saved render (if one was saved before a
        crash): the variants first, then new seeds up to K, within limits.max_renders."""
        cap = self.spec.limits.max_renders
        left = None if cap is None else max(1, cap - state.renders)
        plan = []
        for c in range(1, max(self.spec.search.candidates, len(variants)) + 1):
            ckey = f"{k}_c{c}"
            saved = self.reuse(ckey)
            if saved is None and left is not None:
                if left <= 0:
                    break  # the render budget ends the candidates too
                left -= 1
            cparams = saved[1] if saved else variants[c - 1] if c <= len(variants) else replace(
                params, seed=patch.new_seed(self.rng))
            plan.append((ckey, cparams, saved))
        return plan

    def _start_loop(self, state: RunState) -> None:
        if state.loop > 1 and self.spec.seed.policy == "per_loop":
            state.params = replace(state.params, seed=patch.new_seed(self.rng))
        self.emit(ev.LoopStarted, state, params=state.params)

    def _render(self, state: RunState, k: str, params: Params, saved: bytes | None,
                ticket: str | None = None) -> Rendered:
        if saved is not None:  # rendered before a crash: judge it, do not render it again
            prompt_id = (state.pending or {}).get("prompt_id", "")
            rendered = Rendered(saved, prompt_id, 0.0)
            self.emit(ev.ImageRendered, state, key=k, rendered=rendered, reused=True,
                      params=params, state=state.snapshot())
            return rendered
        if self.spec.critic.unload_before_render and state.renders:
            self._free(state, k, "critic", self.critic.unload)
        def progress(value: int, maximum: int) -> None:
            self.emit(ev.Progress, state, key=k, value=value, maximum=maximum)

        try:
            rendered = self.renderer.collect(ticket, progress) if ticket is not None else \
                self.renderer.render(self._workflow(state, params), progress)
        except RenderRejected as exc:
            self.emit(ev.RenderRefused, state, key=k, data=exc.data, message=str(exc))
            raise
        state.renders += 1
        state.pending = {"key": k, "prompt_id": rendered.prompt_id}
        self.emit(ev.ImageRendered, state, key=k, rendered=rendered, reused=False,
                  params=params, state=state.snapshot(),
                  refine=dict(state.refine) if state.refine else None, mask=self.mask)
        return rendered

    def _workflow(self, state: RunState, params: Params) -> dict[str, Any]:
        """The workflow for `params`: the spec's, or in refine mode its refine graph with the
        best image uploaded to ComfyUI (under a name made from its bytes, so uploading it
        again, after a resume or on another server, is harmless), and with a region to
        repair, its mask too: only that region is repainted, for what belongs there."""
        self.mask = None
        if state.refine is None:
            return binder.bind(self.spec, params)
        saved = self.reuse(state.refine["from"])
        if saved is None:  # its image is gone from the run folder: render from noise
            state.refine = None
            return binder.bind(self.spec, params)
        state.refine["image"] = self.renderer.upload(saved[0], refine.upload_name(saved[0]))
        init = (state.refine["image"], state.refine["denoise"])
        region = state.refine.get("region")
        repair = self.spec.refine.repair if self.spec.refine else None
        if region is None or repair is None:
            return binder.bind(self.spec, params, init)
        with Image.open(io.BytesIO(saved[0])) as img:  # reads the header only
            size = img.size
        self.mask = repair_rules.mask(repair_rules.Box(*region["box"]), size, repair.feather)
        state.refine["mask"] = self.renderer.upload(self.mask, refine.upload_name(self.mask))
        if region.get("fix"):
            params = replace(params, prompt=f"{region['fix']}, {params.prompt}")
        return binder.bind(self.spec, params, init, state.refine["mask"])

    def _free(self, state: RunState, k: str, server: str, free: Callable[[], None]) -> None:
        """One GPU for both: a server lets go of its models first, and the log says so."""
        started = time.monotonic()
        free()
        self.emit(ev.Freed, state, key=k, server=server,
                  seconds=round(time.monotonic() - started, 3))

    def _critique(self, image: bytes, prompt: str, state: RunState
                  ) -> tuple[Judgement, tuple[checklist.Item, ...]]:
        """The critic's verdict with every requirement (the spec's and the user's) matched to
        its item; a critic that skipped some is asked once more for those. Score and done
        come from the matched items: one still unjudged counts as unmet."""
        wanted = checklist.requirements(self.spec.requirements, state.instructions)
        texts = [text for text, _ in wanted]
        judgement = self.critic.judge(image, prompt, texts)
        items = self._items(judgement, wanted)
        if any(i.met is None for i in items):
            again = self.critic.judge(image, prompt + checklist.reminder(items), texts)
            items = checklist.merged(items, self._items(again, wanted) or items)
            judgement = replace(judgement, attempts=judgement.attempts + again.attempts,
                                seconds=judgement.seconds + again.seconds)
        verdict = judgement.verdict
        if verdict is None or not items:
            return judgement, items
        verdict = replace(verdict, done=all(i.met for i in items), score=checklist.score(items))
        return replace(judgement, verdict=verdict), items

    def _verify(self, image: bytes, params: Params, state: RunState, k: str,
                judgement: Judgement, items: tuple[checklist.Item, ...]
                ) -> tuple[Judgement, tuple[checklist.Item, ...]]:
        """A done claim checked with a strict question before it ends the run. When the check
        disagrees, it is asked once more and each requirement goes by the majority of the
        three answers (a noisy model's single "no" would otherwise reject true dones as
        often as the check catches false ones). A rejected claim goes on with the check's
        change."""
        wanted = checklist.requirements(self.spec.requirements, state.instructions)
        prompt = critic_prompt.verify_prompt(self.spec, params, state.instructions)
        texts = [text for text, _ in wanted]
        checks = [self.verifier.judge(image, prompt, texts)]
        found = [self._items(checks[0], wanted)]
        if not (found[0] and all(i.met for i in found[0])):
            checks.append(self.verifier.judge(image, prompt, texts))
            found.append(self._items(checks[1], wanted))
        votes = checklist.majority([items, *found])
        both = replace(judgement, attempts=judgement.attempts + tuple(
            a for c in checks for a in c.attempts), seconds=judgement.seconds + sum(
            c.seconds for c in checks))
        if all(i.met for i in votes):
            return both, votes  # confirmed
        failed = tuple(i.requirement for i in votes if not i.met)
        self.emit(ev.DoneRejected, state, key=k, failed=failed,
                  by=self.spec.critic.verifier or self.spec.critic.model)
        change = next((c.verdict for c in reversed(checks) if c.verdict and
                       not c.verdict.done), None) or judgement.verdict
        assert change is not None  # a done claim always has a verdict
        verdict = replace(change, done=False, score=checklist.score(votes))
        return replace(both, verdict=verdict), votes

    @staticmethod
    def _items(judgement: Judgement, wanted: list[tuple[str, bool]]
               ) -> tuple[checklist.Item, ...]:
        verdict = judgement.verdict
        if verdict is None or not verdict.checklist:
            return ()
        return checklist.match(wanted, verdict.checklist)

    def _apply(self, state: RunState, k: str, params: Params, judgement: Judgement,
               items: tuple[checklist.Item, ...] = (), image: bytes = b"") -> None:
        verdict = judgement.verdict
        if verdict is None:
            state.failures += 1
            state.stalled = False  # asking again may help: the critic did not answer
            state.remember(Tried(state.loop, state.iteration, params, None,
                                 f"(no usable verdict: {judgement.error})", "nothing"))
            self._applied(state, k, None, None, None, items)
            if state.failures >= MAX_CRITIC_FAILURES:
                raise CriticFailing(f"the critic gave no usable verdict {state.failures} times "
                                    f"in a row (last: {judgement.error}); check the model and "
                                    "its prompt template, then resume the run")
            return
        state.failures = 0
        reverted = None
        best = state.best
        refined_before = dict(state.refine or {})
        moved = refine_policy.adapt_denoise(self.spec.refine, state, verdict.score)
        contest = self._contest(state, k, image, verdict.score)
        if best is None or (contest is None and verdict.score > best.score) or contest:
            state.best = Best(k, verdict.score, params)
            base = params
        elif verdict.score < best.score or contest is False:  # go back to the best
            base, reverted = best.params, best.key
        else:
            base = params
        refine_policy.enter(self.spec.refine, state)  # what the next render starts from
        region_refused = refine_policy.choose_region(self.spec.refine, state, k, items)
        # a new source image, denoise or region makes the next image differ
        refine_moved = (state.refine or {}) != refined_before
        if verdict.done:
            state.done_key = k
            state.remember(Tried(state.loop, state.iteration, params, verdict.score,
                                 verdict.reason, "nothing (done)"))
            self._applied(state, k, None, None, verdict.score, items)
            return
        p = patch.apply(base, verdict.changes, self.spec.bounds, self.spec.seed, self.rng,
                        self.spec.knobs)
        if moved:
            p = replace(p, applied=(*p.applied, moved))
        if region_refused:
            p = replace(p, refused=(*p.refused, region_refused))
        state.params = p.params
        state.proposals = self._proposals(base, verdict.alternatives, p.params)
        # Nothing the critic asked for could be applied (refused, or already there): the next
        # render would repeat this one, unless the seed policy draws a new seed each time.
        state.stalled = p.params == params and not state.proposals and not refine_moved \
            and self.spec.seed.policy != "random"
        applied = p.summary() if reverted is None else f"back to {reverted}; {p.summary()}"
        state.remember(Tried(state.loop, state.iteration, params, verdict.score,
                             verdict.reason, applied))
        self._applied(state, k, p, reverted, verdict.score, items)

    def _proposals(self, base: Params, alternatives: tuple[Changes, ...], chosen: Params
                   ) -> list[Params]:
        """search.proposals: the critic's other changes, bounded like any change, each a
        candidate of the next iteration (ones that change nothing, or repeat, are dropped)."""
        out: list[Params] = []
        for changes in alternatives[:max(0, self.spec.search.proposals - 1)]:
            tried = patch.apply(base, changes, self.spec.bounds, self.spec.seed, self.rng,
                                self.spec.knobs).params
            if tried not in (base, chosen, *out):
                out.append(tried)
        return out

    def _contest(self, state: RunState, k: str, image: bytes, score: float) -> bool | None:
        """search.head_to_head: does a new image that scores at least as high as the best so
        far beat it with both in view? None when there is no contest (or no usable answer):
        the scores decide."""
        best = state.best
        if not (self.spec.search.head_to_head and best and best.key != k and image
                and score >= best.score):
            return None
        saved = self.reuse(best.key)
        if saved is None:
            return None
        order = (k, best.key) if self.rng.random() < 0.5 else (best.key, k)
        images = {k: image, best.key: saved[0]}
        answer = self.critic.compare(images[order[0]], images[order[1]],
                                     critic_prompt.pair_prompt(self.spec, state.instructions))
        winner = None if answer.winner is None else order[0 if answer.winner == "first" else 1]
        self.emit(ev.HeadToHead, state, key=k, against=best.key, order=order, winner=winner,
                  reason=answer.reason)
        return None if winner is None else winner == k

    def _applied(self, state: RunState, k: str, p: patch.Patch | None, reverted: str | None,
                 score: float | None, items: tuple[checklist.Item, ...]) -> None:
        self.emit(ev.Applied, state, key=k, patch=p, reverted=reverted, score=score,
                  requirements=items, state=state.snapshot())

    def _next(self, state: RunState, k: str) -> None:
        if state.done_key:
            state.status = "done"
            self.emit(ev.Done, state, key=k, state=state.snapshot())
            return
        cap = self.spec.limits.max_renders
        if cap is not None and state.renders >= cap:
            state.status = "limits"  # the render budget is spent, whatever the loops allow
            self.emit(ev.LimitsReached, state, state=state.snapshot())
            return
        if state.stalled and not (self.spec.seed.policy == "per_loop"
                                  and state.loop < state.last_loop):
            state.status = "limits"  # repeating the same image is no way to get anywhere
            self.emit(ev.Stalled, state, key=k)
            self.emit(ev.LimitsReached, state, state=state.snapshot())
            return
        if state.iteration < self.spec.limits.iterations_per_loop and not state.stalled:
            self.emit(ev.IterationEnded, state, key=k, state=state.snapshot())
            return
        # stalled: a new seed is the way on
        self.emit(ev.LoopEnded, state, key=k, state=state.snapshot())
        if state.loop >= state.last_loop:
            state.status = "limits"
            self.emit(ev.LimitsReached, state, state=state.snapshot())
            return
        # No reset needed here: every patch starts from the best so far (see _apply), so the
        # next loop never starts from drift.
        state.loop += 1
        state.iteration = 0
        self.emit(ev.IterationEnded, state, key=k, state=state.snapshot())
