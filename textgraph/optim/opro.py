"""OPRO: Optimization by PROmpting (Yang et al., 2023, "Large Language Models as Optimizers").

The optimizer LLM sees a meta-prompt: what the program does, the values of one
text parameter tried so far with their validation scores (the trajectory),
sorted ascending so the best comes last, and a few training examples with
their expected answers. It is asked, several times at once with a seeded
temperature, for a new value that differs from all of them and scores higher.

Per step:

1. One text parameter, round-robin over the module's parameters in order
   (tg.Demos parameters are not text and are skipped).
2. Its trajectory gets the incumbent's value with the incumbent's validation
   score (cached: the loop already scored it). The `history` best entries are
   shown, ascending by score (ties in the order they were recorded), as
   integers 0-100 (score x 100, rounded), with `exemplars` training examples
   drawn with a seed of (seed, step).
3. `candidates_per_step` requests run concurrently (request k of step s is
   seeded from (seed, s, k)); each reply holds one value between markers.
   Unusable replies are noted and skipped; values already in the trajectory
   and repeats within the step are dropped.
4. The candidates (the incumbent with that one value changed) go to the loop,
   which scores each on the full validation set and gates the best;
   `observe` adds every validated one to the trajectory with its score.

Choices the paper leaves open for a multi-parameter program:

- A value's score is its latest measurement: each turn of a parameter
  refreshes the incumbent value's score (the other parameters may have
  changed since it was recorded).
- With `Trainer(val_subset=k)` a candidate rejected on the first k validation
  examples only has a subset score, not comparable with full ones: it is kept
  in the trajectory, marked partial, so it is never proposed again, but it is
  neither shown to the model nor counted for `target`.
- `target`: finished once a full validation score in any trajectory reaches
  it. `max_empty_rounds`: finished once every text parameter's last that
  many turns brought no new value (every reply unusable or already tried).

The trajectory lives in the optimizer's checkpointed state, so a resumed run
sends exactly the requests an uninterrupted one would.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import sys
from typing import Any, ClassVar

from textgraph._checks import check_int, check_number, check_optional_int
from textgraph.candidate import Candidate
from textgraph.engines.base import ChatRequest, Engine
from textgraph.engines.context import check_engine, resolve_engine
from textgraph.errors import ArgumentError, ContentFiltered, StateDictError, TruncatedOutput
from textgraph.optim.base import CandidateOutcome, Optimizer
from textgraph.optim.context import StepContext
from textgraph.optim.demos import ops_of
from textgraph.optim.program import describe_program, example_text
from textgraph.optim.tgd import unique_markers
from textgraph.prompts import fence, load, render_file
from textgraph.structured import call_delimited

STATE_VERSION = 1


class OPRO(Optimizer):
    """`OPRO(history=20, candidates_per_step=8, exemplars=3, seed=0)`.

    history: past values shown in the meta-prompt (the best ones, ascending by score).
    candidates_per_step: proposal requests per step (concurrent; each may give one new
    value). exemplars: training examples shown (0: none). seed: request seeds and the
    exemplar draws. engine: the model that proposes (default: the Trainer's
    critic_engine, then its engine, then the context's). target: stop once a validation
    score reaches it (0-1). temperature / max_tokens: of each proposal request.
    max_empty_rounds: stop once every text parameter's last that many turns brought no
    new value (None: never). verbose: print the projected calls per step.
    Needs the Trainer's validation split: the trajectory's scores are validation scores.
    """

    name: ClassVar[str] = "opro"
    full_validation: ClassVar[bool] = True  # every scored candidate joins a trajectory

    def __init__(
        self,
        history: int = 20,
        candidates_per_step: int = 8,
        exemplars: int = 3,
        seed: int = 0,
        *,
        engine: Engine | str | None = None,
        target: float | None = None,
        temperature: float = 1.0,
        max_tokens: int | None = None,
        max_empty_rounds: int | None = 3,
        verbose: bool = True,
    ) -> None:
        check_int("history", history, minimum=1, instead="it is how many past values to show")
        check_int("candidates_per_step", candidates_per_step, minimum=1)
        check_int("exemplars", exemplars, minimum=0, instead="pass 0 to show no examples")
        check_int("seed", seed, minimum=None)
        engine = check_engine(engine, "OPRO(engine)")
        if target is not None and (
            isinstance(target, bool)
            or not isinstance(target, (int, float))
            or math.isnan(target)
            or not 0.0 <= target <= 1.0
        ):
            raise ArgumentError(
                f"target must be a validation score between 0 and 1, got {target!r}; "
                "pass None to run until max_steps"
            )
        check_number(
            "temperature", temperature, positive=False, instead="1.0 is the paper's setting"
        )
        check_optional_int("max_tokens", max_tokens, minimum=1, none_means="the engine's default")
        check_optional_int(
            "max_empty_rounds", max_empty_rounds, minimum=1, none_means="never stopping on it"
        )
        if not isinstance(verbose, bool):
            raise ArgumentError(f"verbose must be True or False, got {verbose!r}")
        self.history, self.candidates_per_step = history, candidates_per_step
        self.exemplars, self.seed, self.engine = exemplars, seed, engine
        self.target = None if target is None else float(target)
        self.temperature, self.max_tokens = float(temperature), max_tokens
        self.max_empty_rounds, self.verbose = max_empty_rounds, verbose
        # parameter name -> entries {"value", "score", "step", "examples", "partial"}
        self._trajectories: dict[str, list[dict[str, Any]]] = {}
        self._turn = 0  # proposals made: the round-robin position
        self._empty: dict[str, int] = {}  # turns in a row without a new value, per parameter
        self._val_size: int | None = None
        self._pending: dict[str, tuple[str, int]] = {}  # candidate id -> (parameter, step)
        self.projection = ""

    # --- the loop's view ----------------------------------------------------------

    @property
    def trajectories(self) -> dict[str, list[tuple[str, float]]]:
        """Parameter name -> [(value, validation score)] in the order they were recorded
        (partial subset scores included; see the module docstring)."""
        return {
            name: [(e["value"], e["score"]) for e in entries]
            for name, entries in self._trajectories.items()
        }

    def finished(self) -> str | None:
        reached = self._target_reached()
        if reached:
            return reached
        if (
            self.max_empty_rounds is not None
            and self._empty
            and all(self._empty.get(n, 0) >= self.max_empty_rounds for n in self._trajectories)
        ):
            return (
                f"no new value in the last {self.max_empty_rounds} turn(s) of every "
                "parameter (every reply unusable or already tried)"
            )
        return None

    def _target_reached(self) -> str | None:
        if self.target is None:
            return None
        for name, entries in self._trajectories.items():
            full = [e["score"] for e in entries if not e["partial"]]
            if full and max(full) >= self.target:
                return (
                    f"target {self.target:g} reached: '{name}' scored {max(full):.3f} on validation"
                )
        return None

    async def propose(self, ctx: StepContext) -> list[Candidate]:
        if not ctx.val:
            raise ArgumentError(
                "OPRO needs validation scores for its trajectory: pass val=[...] examples to "
                "tg.Trainer"
            )
        texts = ctx.text_parameters("OPRO")
        engine = resolve_engine(
            self.engine,
            ctx.critic_engine,
            ctx.engine,
            what="OPRO proposals",
            role="optimizer_engine",
        )
        self._val_size = len(ctx.val)
        self._pending.clear()
        incumbent = await ctx.evaluate(ctx.current, ctx.val)
        score = incumbent.gate_mean() or 0.0
        for name in texts:  # the first turn: every trajectory starts at the incumbent
            if name not in self._trajectories:
                self._trajectories[name] = []
                self._record(name, ctx.current.values[name], score, ctx.step, len(ctx.val))
        if not self.projection:
            self.projection = self._project(ctx)
            ctx.note(self.projection)
            if self.verbose:
                print(self.projection, file=sys.stderr)
        name = texts[self._turn % len(texts)]
        self._turn += 1
        self._record(name, ctx.current.values[name], score, ctx.step, len(ctx.val))
        done = self._target_reached()
        if done:
            ctx.note(f"nothing proposed: {done}")
            return []
        return await self._propose_for(ctx, engine, name)

    def observe(self, outcomes: list[CandidateOutcome]) -> None:
        """Every validated candidate joins its parameter's trajectory with its score."""
        for outcome in outcomes:
            pending = self._pending.get(outcome.candidate.id)
            if pending is None or outcome.result is None:
                continue  # not ours, or never evaluated (filtered, unchanged, duplicate)
            score = outcome.result.gate_mean()
            if score is None:
                continue
            name, step = pending
            self._record(name, outcome.candidate.values[name], score, step, outcome.result.n)
        self._pending.clear()

    # --- one step ------------------------------------------------------------------

    async def _propose_for(self, ctx: StepContext, engine: Engine, name: str) -> list[Candidate]:
        param = ctx.parameters[name]
        entries = self._trajectories[name]
        full = [e for e in entries if not e["partial"]]
        ranked = sorted(full, key=lambda e: e["score"])  # stable: ties in recorded order
        shown = ranked[-self.history :]
        past = "\n".join(
            render_file("opro_past_value", score=str(_percent(e["score"])), value=fence(e["value"]))
            for e in shown
        )
        examples = self._exemplars(ctx)
        exemplars = (
            render_file(
                "opro_exemplars",
                count=str(len(examples)),
                examples="\n".join(
                    render_file("opro_exemplar", example=fence(example_text(x))) for x in examples
                ),
            )
            + "\n"
            if examples
            else ""
        )
        program = describe_program(ctx.module, None)
        data = "\n".join([program, param.role_description, past, exemplars])
        start, end = unique_markers(data, f"opro|{self.seed}|{ctx.step}|{name}")
        user = render_file(
            "opro_user",
            program=fence(program),
            name=name,
            step=self._where(ctx, name),
            role=param.role_description,
            shown=str(len(shown)),
            tried=str(len(full)),
            past_values=past,
            exemplars=exemplars,
            start=start,
            end=end,
        )
        scores_shown = [_percent(e["score"]) for e in shown]

        async def one(k: int) -> str | None:
            request = ChatRequest.from_prompts(
                load("opro_system"),
                user,
                purpose="opro",
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                seed=request_seed(self.seed, ctx.step, k),
                variable_ids=[param.id],
                metadata={"optimizer": self.name, "parameter": name, "request": k},
            )
            try:
                reply = await call_delimited(engine, request, start, end)
            except (TruncatedOutput, ContentFiltered) as exc:
                ctx.note(f"{name}: proposal {k} unusable ({type(exc).__name__}: {exc})")
                return None
            if not reply.ok:
                ctx.note(f"{name}: proposal {k} unusable ({reply.error})")
                return None
            return str(reply.value)

        replies = await asyncio.gather(*(one(k) for k in range(self.candidates_per_step)))
        known = {e["value"].strip() for e in entries}
        seen: set[str] = set()
        candidates: list[Candidate] = []
        old = dup = 0
        for k, value in enumerate(replies):
            if value is None:
                continue
            key = value.strip()
            if key in known:
                old += 1
                continue
            if key in seen:
                dup += 1
                continue
            seen.add(key)
            candidate = ctx.current.with_values(
                {name: value},
                origin=f"opro step {ctx.step}",
                details={
                    "optimizer": self.name,
                    "parameter": name,
                    "request": k,
                    "trajectory": scores_shown,
                },
            )
            self._pending[candidate.id] = (name, ctx.step)
            candidates.append(candidate)
        unusable = sum(r is None for r in replies)
        ctx.note(
            f"{name}: {self.candidates_per_step} proposal(s) from a trajectory of "
            f"{len(shown)} shown value(s) (scores {', '.join(map(str, scores_shown))}) and "
            f"{len(examples)} exemplar(s): {len(candidates)} new, {old} already tried, "
            f"{dup} repeated, {unusable} unusable"
        )
        self._empty[name] = 0 if candidates else self._empty.get(name, 0) + 1
        return candidates

    def _exemplars(self, ctx: StepContext) -> list[Any]:
        count = min(self.exemplars, len(ctx.train))
        rng = random.Random(f"opro|{self.seed}|{ctx.step}|exemplars")
        return [ctx.train[i] for i in rng.sample(range(len(ctx.train)), count)]

    def _where(self, ctx: StepContext, name: str) -> str:
        """Where the parameter is read, in the numbering of describe_program."""
        param = ctx.parameters[name]
        llm_ops = [op for op in ops_of(ctx.module) if op.calls_llm]
        steps = [
            str(i) for i, op in enumerate(llm_ops, 1) if getattr(op, "system_prompt", None) is param
        ]
        if not steps:
            return "text that the program reads"
        return f"the instruction of step{'s' if len(steps) > 1 else ''} {', '.join(steps)} above"

    def _project(self, ctx: StepContext) -> str:
        per_example = max(1, sum(1 for op in ops_of(ctx.module) if op.calls_llm))
        n = self.candidates_per_step
        evaluations = n * len(ctx.val) * per_example
        return (
            f"OPRO projects at most {n + evaluations} LLM calls per step: {n} proposal "
            f"requests (each may add one repair call) + up to {n} candidates x "
            f"{len(ctx.val)} validation examples x {per_example} call(s) = {evaluations} "
            "(examples already scored for a candidate are never re-run)"
        )

    def _record(self, name: str, value: str, score: float, step: int, examples: int) -> None:
        """Add (or update: a value's latest measurement wins) a trajectory entry."""
        partial = self._val_size is not None and examples < self._val_size
        entries = self._trajectories.setdefault(name, [])
        for entry in entries:
            if entry["value"] == value:
                entry.update(score=float(score), step=step, examples=examples, partial=partial)
                return
        entries.append(
            {
                "value": value,
                "score": float(score),
                "step": step,
                "examples": examples,
                "partial": partial,
            }
        )

    # --- state ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "trajectories": {n: [dict(e) for e in es] for n, es in self._trajectories.items()},
            "turn": self._turn,
            "empty": dict(self._empty),
            "val_size": self._val_size,
            "projection": self.projection,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise StateDictError(f"OPRO state must be a dict, got {type(state).__name__}")
        if state.get("version") != STATE_VERSION:
            raise StateDictError(
                f"OPRO state version {state.get('version')!r} is not {STATE_VERSION}: it was "
                "written by another textgraph; continue in a new run_dir"
            )
        trajectories = state.get("trajectories")
        if not isinstance(trajectories, dict):
            raise StateDictError("OPRO state needs 'trajectories': parameter name -> entries")
        loaded: dict[str, list[dict[str, Any]]] = {}
        for name, entries in trajectories.items():
            if not isinstance(name, str) or not isinstance(entries, list):
                raise StateDictError(f"OPRO trajectory {name!r} must be a list of entries")
            loaded[name] = [_entry(name, i, e) for i, e in enumerate(entries)]
        turn, empty, val_size = state.get("turn"), state.get("empty"), state.get("val_size")
        if not _is_int(turn) or turn < 0:
            raise StateDictError(f"OPRO state needs 'turn', an int >= 0, got {turn!r}")
        if not isinstance(empty, dict) or not all(
            isinstance(k, str) and _is_int(v) and v >= 0 for k, v in empty.items()
        ):
            raise StateDictError("OPRO state needs 'empty': parameter name -> int >= 0")
        if val_size is not None and (not _is_int(val_size) or val_size < 1):
            raise StateDictError(f"OPRO state 'val_size' must be an int >= 1, got {val_size!r}")
        projection = state.get("projection", "")
        if not isinstance(projection, str):
            raise StateDictError("OPRO state 'projection' must be a str")
        self._trajectories, self._turn, self._empty = loaded, turn, dict(empty)
        self._val_size, self.projection = val_size, projection
        self._pending = {}

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "history": self.history,
            "candidates_per_step": self.candidates_per_step,
            "exemplars": self.exemplars,
            "seed": self.seed,
            "target": self.target,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "max_empty_rounds": self.max_empty_rounds,
        }


def request_seed(seed: int, step: int, index: int) -> int:
    """The seed of proposal request `index` of step `step`: distinct per request, stable
    across runs and resumes, and within 31 bits (every provider takes it)."""
    digest = hashlib.sha256(f"opro|{seed}|{step}|{index}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def _percent(score: float) -> int:
    """A score as OPRO shows it: an integer 0-100."""
    return round(score * 100)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(name: str, i: int, entry: Any) -> dict[str, Any]:
    where = f"OPRO trajectory {name!r} entry {i}"
    if not isinstance(entry, dict):
        raise StateDictError(f"{where} must be a dict, got {type(entry).__name__}")
    value, score = entry.get("value"), entry.get("score")
    step, examples, partial = entry.get("step"), entry.get("examples"), entry.get("partial")
    if not isinstance(value, str):
        raise StateDictError(f"{where}: 'value' must be a str")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise StateDictError(f"{where}: 'score' must be a finite number, got {score!r}")
    if not _is_int(step) or not _is_int(examples) or examples < 0:
        raise StateDictError(f"{where}: 'step' and 'examples' must be ints")
    if not isinstance(partial, bool):
        raise StateDictError(f"{where}: 'partial' must be true or false")
    return {
        "value": value,
        "score": float(score),
        "step": step,
        "examples": examples,
        "partial": partial,
    }
