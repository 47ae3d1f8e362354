"""The loop: render, critique, patch, again; until done or the limits. A state machine over the
run's state: it takes a renderer and a critic, decides with the rules of its sibling modules
(search, judging, patch, refine_policy) and tells listeners what happens as events. It never
touches the network or the disk itself."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from imitatoes.errors import ImitatoesError
from imitatoes.loop import (
    binder,
    checklist,
    judging,
    patch,
    prompts,
    refine_policy,
    repeats,
    search,
    strategy,
)
from imitatoes.loop import events as ev
from imitatoes.loop.events import Listener
from imitatoes.loop.judging import Matched
from imitatoes.loop.ports import Critic, Rendered, Renderer, RenderRejected, Reuse, Saved
from imitatoes.loop.state import Best, Pending, RunState, Tried, fingerprint, key
from imitatoes.loop.verdict import Verdict
from imitatoes.spec.model import Params, Spec

MAX_CRITIC_FAILURES = 3  # in a row: the critic is not working, stop instead of burning renders


class CriticFailing(ImitatoesError):
    pass


@dataclass(frozen=True)
class Look:
    """One image: the params it was made with, the render, what the critic was told, and its
    judgement matched to the checklist."""

    key: str
    params: Params
    rendered: Rendered
    prompt: str
    matched: Matched


class Engine:
    def __init__(self, spec: Spec, renderer: Renderer, critic: Critic,
                 listeners: Iterable[Listener] = (), rng: random.Random | None = None,
                 reuse: Reuse | None = None, verifier: Critic | None = None,
                 remembered: tuple[str, ...] = ()) -> None:
        self.spec, self.renderer, self.critic = spec, renderer, critic
        self.verifier = verifier or critic  # checks done claims (search.verify_done)
        self.listeners = list(listeners)
        self.rng = rng or random.Random()
        # A render saved before a crash (image and the params it was made with), judged
        # instead of being rendered again.
        self.reuse: Reuse = reuse or (lambda _key: None)
        self._queued: dict[str, binder.Submission] = {}  # by ticket: candidates queued at once
        self.step = strategy.step(spec.search, (), 0, None)  # what this iteration spends
        self.remembered = remembered  # what worked before for similar requirements (memory)

    def emit(self, event_type: type[ev.Event], at: RunState, **fields: object) -> None:
        event = event_type(loop=at.loop, iteration=at.iteration, **fields)
        for listener in self.listeners:
            listener(event)

    def run(self, state: RunState) -> RunState:
        self._rescore(state)
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

    def _rescore(self, state: RunState) -> None:
        """The best so far against the checklist as it is now (an instruction or an edited
        spec changes it): scores given against different checklists are never compared."""
        if state.best is not None:
            state.best = state.best.rescored(self._checklist(state))
        state.refine = refine_policy.enter(self.spec.refine, state.best, state.refine)

    def _checklist(self, state: RunState) -> tuple[str, ...]:
        return state.checklist(self.spec.requirements)

    def _wanted(self, state: RunState) -> list[tuple[str, bool]]:
        return checklist.requirements(self.spec.requirements, state.instructions)

    def _iteration(self, state: RunState) -> None:
        if state.iteration == 0:
            self._start_loop(state)
        state.iteration += 1
        state.in_progress = True
        k = key(state.loop, state.iteration)
        saved = self.reuse(k)
        if saved:
            state.params = saved.params
        elif self.spec.seed.policy == "random":
            state.params = replace(state.params, seed=patch.new_seed(self.rng))
        self.step = strategy.step(self.spec.search, state.history, state.renders,
                                  self.spec.limits.max_renders, self._checklist(state))
        self.emit(ev.IterationStarted, state, key=k, params=state.params)
        if (self.step.candidates > 1 or state.proposals) and not saved:
            look = self._candidates(state, k, state.params)
        else:
            look = self._look(state, k, state.params, saved)
        look = replace(look, key=k)  # a chosen candidate goes on under the iteration's name
        if look.matched.done and self.spec.search.verify_done:
            look = self._verify(state, look)
        self.emit(ev.Judged, state, key=k, judgement=look.matched.judgement, prompt=look.prompt)
        self._apply(state, look)
        state.pending, state.in_progress = None, False
        self._next(state, k)

    def _look(self, state: RunState, k: str, params: Params, saved: Saved | None,
              ticket: str | None = None) -> Look:
        """One image: rendered (or collected, when queued, or the one saved before a crash)
        and critiqued."""
        rendered = self._render(state, k, params, saved, ticket)
        if self.spec.comfyui.free_before_critique:
            self._free(state, k, "comfyui", self.renderer.free)
        self.emit(ev.Critiquing, state, key=k)
        prompt = prompts.with_regions(prompts.with_proposals(
            prompts.critic_prompt(self.spec, params, state.loop, state.iteration,
                                  state.history, state.instructions, self.remembered),
            self.step.proposals), self.spec.critic.regions)
        matched = judging.ask(self.critic, rendered.image, prompt, self._wanted(state))
        return Look(k, params, rendered, prompt, matched)

    def _candidates(self, state: RunState, k: str, params: Params) -> Look:
        """search.candidates and search.proposals: the parameters, the critic's alternative
        changes to them (proposals), then the parameters with new seeds up to K, each rendered
        and judged; the best goes on under the iteration's own name."""
        variants = [params, *state.proposals]
        state.proposals = []
        plan = search.plan(self.spec, state.renders, k, params, variants, self.reuse, self.rng,
                           lambda p: fingerprint(p, state.refine) in state.rendered,
                           self.step.candidates, self.step.fresh_first)
        # All at once, so ComfyUI renders the next while the critic judges the last; not when
        # the two take turns on one GPU (they would fight over it).
        one_gpu = self.spec.critic.unload_before_render or self.spec.comfyui.free_before_critique
        # auto renders its spread one by one and stops at the first image that is done or
        # better than the best: renders are what a user pays for, overlap is not worth one
        thrifty = self.spec.search.strategy == "auto"
        tickets = {} if one_gpu or thrifty else {c.key: self._queue(state, c.params)
                                                 for c in plan if c.saved is None}
        looks = []
        try:
            for c in plan:
                look = self._look(state, c.key, c.params, c.saved, tickets.get(c.key))
                self.emit(ev.Judged, state, key=c.key, judgement=look.matched.judgement,
                          prompt=look.prompt)
                self.emit(ev.CandidateJudged, state, key=c.key, score=look.matched.score)
                looks.append(look)
                if thrifty and self._enough(state, look):
                    break
        except ImitatoesError:
            self.renderer.interrupt()  # leave no queued candidate rendering for nobody
            raise
        best = max(looks, key=lambda t: -1.0 if t.matched.score is None else t.matched.score)
        self.emit(ev.CandidateChosen, state, key=k, chosen=best.key, candidates=tuple(
            (t.key, t.params.seed, t.matched.score) for t in looks))
        state.pending = Pending(k, best.rendered.prompt_id)
        return best

    @staticmethod
    def _enough(state: RunState, look: Look) -> bool:
        """An auto spread stops at an image the critic finds done, or one better than the
        best so far: the next step goes on from it (verifier-threshold search)."""
        score = look.matched.score
        return look.matched.done or (score is not None and state.best is not None
                                     and score > state.best.score)

    def _start_loop(self, state: RunState) -> None:
        if state.loop > 1 and self.spec.seed.policy == "per_loop":
            state.params = replace(state.params, seed=patch.new_seed(self.rng))
        self.emit(ev.LoopStarted, state, params=state.params)

    def _render(self, state: RunState, k: str, params: Params, saved: Saved | None,
                ticket: str | None = None) -> Rendered:
        if saved is not None:  # rendered before a crash: judge it, do not render it again
            prompt_id = state.pending.prompt_id if state.pending else ""
            rendered = Rendered(saved.image, prompt_id, 0.0)
            state.rendered.setdefault(fingerprint(params, state.refine), k)
            self.emit(ev.ImageRendered, state, key=k, rendered=rendered, reused=True,
                      params=params, state=state.snapshot())
            return rendered
        if self.spec.critic.unload_before_render and state.renders:
            self._free(state, k, "critic", self.critic.unload)

        def progress(value: int, maximum: int) -> None:
            self.emit(ev.Progress, state, key=k, value=value, maximum=maximum)

        sub = self._submission(state, params) if ticket is None else self._queued.pop(ticket)
        try:
            rendered = self.renderer.collect(ticket, progress) if ticket is not None else \
                self.renderer.render(sub.workflow, progress)
        except RenderRejected as exc:
            self.emit(ev.RenderRefused, state, key=k, data=exc.data, message=str(exc))
            raise
        state.renders += 1
        state.rendered.setdefault(fingerprint(params, sub.refine), k)
        state.pending = Pending(k, rendered.prompt_id)
        self.emit(ev.ImageRendered, state, key=k, rendered=rendered, reused=False,
                  params=params, state=state.snapshot(), refine=sub.record(), mask=sub.mask)
        return rendered

    def _submission(self, state: RunState, params: Params) -> binder.Submission:
        """What to submit for `params` (binder.submission); a refine whose source image is
        gone from the run folder renders from noise, and refine mode starts over."""
        sub = binder.submission(self.spec, params, state.refine, self._image_of,
                                self.renderer.upload)
        if state.refine is not None and sub.refine is None:
            state.refine = None
        return sub

    def _queue(self, state: RunState, params: Params) -> str:
        """Queue the submission for `params`; the ticket to collect it with."""
        sub = self._submission(state, params)
        ticket = self.renderer.queue(sub.workflow)
        self._queued[ticket] = sub
        return ticket

    def _image_of(self, k: str) -> bytes | None:
        saved = self.reuse(k)
        return saved.image if saved else None

    def _free(self, state: RunState, k: str, server: str, free: Callable[[], None]) -> None:
        """One GPU for both: a server lets go of its models first, and the log says so."""
        started = time.monotonic()
        free()
        self.emit(ev.Freed, state, key=k, server=server,
                  seconds=round(time.monotonic() - started, 3))

    def _verify(self, state: RunState, look: Look) -> Look:
        prompt = prompts.verify_prompt(self.spec, look.params, state.instructions)
        checked = judging.verify(self.verifier, look.rendered.image, prompt,
                                 self._wanted(state), look.matched)
        if checked.failed:
            self.emit(ev.DoneRejected, state, key=look.key, failed=checked.failed,
                      by=self.spec.critic.verifier or self.spec.critic.model)
        return replace(look, matched=checked.matched)

    def _apply(self, state: RunState, look: Look) -> None:
        """Fold a judged image into the state: the best so far, the refine state, and the
        parameters of the next render (never those of an image already rendered)."""
        verdict = look.matched.judgement.verdict
        if verdict is None:
            self._no_verdict(state, look)
            return
        state.failures = 0
        gained, lost = repeats.progress(look.matched.items, state.best)
        state.refine, moved = refine_policy.adapt_denoise(
            self.spec.refine, state.refine, state.best, verdict.score)
        base, reverted, note = self._new_best(state, look, gained)
        state.refine = refine_policy.enter(self.spec.refine, state.best, state.refine)
        state.refine, region_refused = refine_policy.choose_region(
            self.spec.refine, state.refine, state.best, look.key, look.matched.items)
        met = tuple(i.requirement for i in look.matched.items if i.met)
        if verdict.done:
            state.done_key = look.key
            state.remember(Tried(state.loop, state.iteration, look.params, verdict.score,
                                 verdict.reason, "nothing (done)", gained, lost,
                                 self.step.kind, met))
            self._applied(state, look, None, None)
            return
        verdict, guarded = self._protected(state, look, base, verdict)
        p = patch.apply(base, verdict.changes, self.spec.bounds, self.spec.seed, self.rng,
                        self.spec.knobs, self.spec.goal)
        spent = f"auto spent {self.step.kind}: {self.step.why}" if self.step.why else None
        p = replace(p, applied=(*filter(None, [spent, note]), *p.applied,
                                *filter(None, [moved])),
                    refused=(*guarded, *p.refused, *filter(None, [region_refused])))
        state.proposals = search.proposals(self.spec, base, verdict.alternatives, p.params,
                                           self.rng, self.step.proposals)
        p, state.stalled = repeats.avoid(self.spec, state, look.params, reverted is not None,
                                         verdict.changes, p, self.rng, self.step.kind)
        state.params = p.params
        applied = p.summary() if reverted is None else f"back to {reverted}; {p.summary()}"
        state.remember(Tried(state.loop, state.iteration, look.params, verdict.score,
                             verdict.reason, applied, gained, lost, self.step.kind, met))
        self._applied(state, look, p, reverted)

    def _protected(self, state: RunState, look: Look, base: Params, verdict: Verdict
                   ) -> tuple[Verdict, tuple[patch.Refusal, ...]]:
        """search auto: the verdict with its change and its alternatives less what would take
        from a requirement the image the change starts from already meets (patch.protect),
        so every later use of them (the proposals, a change moved off a repeat) is
        protected too; the refusals of the change itself, for the record."""
        if self.spec.search.strategy != "auto":
            return verdict, ()
        wanted = self._checklist(state)
        met = [i.requirement for i in look.matched.items if i.met] if base == look.params \
            else list(state.best.met if state.best else ())
        unmet = [r for r in wanted if r not in met]
        changes, refused = patch.protect(verdict.changes, base.prompt, met, unmet)
        alternatives = tuple(patch.protect(a, base.prompt, met, unmet)[0]
                             for a in verdict.alternatives)
        return replace(verdict, changes=changes, alternatives=alternatives), refused

    def _no_verdict(self, state: RunState, look: Look) -> None:
        judgement = look.matched.judgement
        state.failures += 1
        state.stalled = False  # asking again may help: the critic did not answer
        state.remember(Tried(state.loop, state.iteration, look.params, None,
                             f"(no usable verdict: {judgement.error})", "nothing"))
        self._applied(state, look, None, None)
        if state.failures >= MAX_CRITIC_FAILURES:
            raise CriticFailing(f"the critic gave no usable verdict {state.failures} times "
                                f"in a row (last: {judgement.error}); check the model and "
                                "its prompt template, then resume the run")

    def _new_best(self, state: RunState, look: Look, gained: tuple[str, ...]
                  ) -> tuple[Params, str | None, str]:
        """Whether `look` is the new best (by score, or by a contest in both orders when it
        scores at least as high, search.head_to_head); the params the next change starts
        from, the best it went back to (if it did), and a note for the record. An image
        that scores lower but met a requirement the best did not is not thrown away: the
        next change goes on from it, so the fixes are combined rather than separated."""
        score = look.matched.score
        assert score is not None  # a verdict always has a score
        best = state.best
        outcome = self._contest(state, look)
        if best is None or outcome == "won" or (outcome in (None, "unanswered")
                                                 and score > best.score):
            checklist = self._checklist(state)
            met = tuple(i.requirement for i in look.matched.items if i.met)
            state.best = Best(look.key, score, look.params, checklist, met)
            return look.params, None, ""
        if score < best.score and gained and outcome != "lost":
            return look.params, None, f"on from this image: it met {'; '.join(gained)}"
        if score < best.score or outcome == "lost":  # go back to the best
            return best.params, best.key, ""
        if outcome == "tie":  # the best stays; the change goes on from this image
            return look.params, None, f"tie with {best.key} (each won in one order)"
        return look.params, None, ""

    def _contest(self, state: RunState, look: Look) -> str | None:
        """search.head_to_head: the outcome of a new image that scores at least as high as
        the best so far against it, with both in view; None when there is no contest."""
        best, score = state.best, look.matched.score
        if not (self.spec.search.head_to_head and best and best.key != look.key
                and look.rendered.image and score is not None and score >= best.score):
            return None
        saved = self.reuse(best.key)
        if saved is None:
            return None
        result = search.contest(self.spec, self.critic, look.key, look.rendered.image, best,
                                saved.image, state.instructions)
        self.emit(ev.HeadToHead, state, key=look.key, contest=result)
        return result.outcome

    def _applied(self, state: RunState, look: Look, p: patch.Patch | None,
                 reverted: str | None) -> None:
        self.emit(ev.Applied, state, key=look.key, patch=p, reverted=reverted,
                  score=look.matched.score, requirements=look.matched.items,
                  extra=look.matched.extra, state=state.snapshot())

    def _next(self, state: RunState, k: str) -> None:
        if state.done_key:
            state.status = "done"
            self.emit(ev.Done, state, key=k, state=state.snapshot())
            return
        cap = self.spec.limits.max_renders
        if cap is not None and state.renders >= cap:
            self._end(state)  # the render budget is spent, whatever the loops allow
            return
        if state.stalled and not (self.spec.seed.policy == "per_loop"
                                  and state.loop < state.last_loop):
            self.emit(ev.Stalled, state, key=k)  # repeating the same image gets nowhere
            self._end(state)
            return
        if state.iteration < self.spec.limits.iterations_per_loop and not state.stalled:
            self.emit(ev.IterationEnded, state, key=k, state=state.snapshot())
            return
        # stalled: a new seed is the way on
        self.emit(ev.LoopEnded, state, key=k, state=state.snapshot())
        if state.loop >= state.last_loop:
            self._end(state)
            return
        # No reset needed here: every patch starts from the best so far (see _apply), so the
        # next loop never starts from drift.
        state.loop += 1
        state.iteration = 0
        self.emit(ev.IterationEnded, state, key=k, state=state.snapshot())

    def _end(self, state: RunState) -> None:
        state.status = "limits"
        self.emit(ev.LimitsReached, state, state=state.snapshot())
