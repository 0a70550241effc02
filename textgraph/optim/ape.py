"""APE: Automatic Prompt Engineer (Zhou et al., 2022), one text parameter at a time.

For each text parameter of the module (tg.Demos are not text and are skipped),
in `ctx.parameters` order, APE runs `1 + resample_rounds` rounds, one per
Trainer step:

- Round 0, induction (the paper's "forward generation" template):
  `num_proposals` concurrent calls, each shown a different seeded sample of
  training examples as input/output pairs, the program's structure and the
  parameter's current value, each asked for the instruction that would
  produce those outputs from those inputs. The population is the current
  value plus the distinct usable replies.
- Rounds 1..resample_rounds, resampling (the paper's iterative Monte Carlo
  search): the previous round's `top_k` plus variations of each of them
  ("generate a variation of the following instruction while keeping the
  semantic meaning"), `num_proposals` split evenly over the `top_k`.

Each round scores its population by **successive halving** (not a UCB
bandit): on a seeded subset of `eval_subset` validation examples, every
candidate is first scored on a small prefix of the subset; at each rung the
top half survives (ties go to the earlier proposal) and the prefix doubles,
until `top_k` remain, which are scored on the whole subset. Scoring goes
through `ctx.evaluate`, which caches per candidate and example, so a larger
rung only runs the new examples. The round's best goes to the loop, which
scores it on the whole validation set and gates it against the incumbent;
the next parameter starts from the incumbent the loop kept.

Requests are seeded by (seed, parameter, round, proposal) and every sample
is drawn from a `random.Random` keyed the same way, so two runs with the same
seed send the same requests, and a resumed run redoes an interrupted round
exactly as an uninterrupted run does it.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import sys
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from textgraph._checks import check_int, check_optional_int
from textgraph.candidate import Candidate, values_id
from textgraph.demos import Demos
from textgraph.engines.base import ChatRequest, Engine
from textgraph.engines.context import check_engine, resolve_engine
from textgraph.errors import ArgumentError, EngineError
from textgraph.eval.evaluator import is_fatal
from textgraph.eval.result import EvalResult
from textgraph.module import Module
from textgraph.optim.base import CandidateOutcome, Optimizer
from textgraph.optim.context import StepContext
from textgraph.optim.demos import LABEL_FIELDS, ops_of
from textgraph.optim.program import describe_program
from textgraph.optim.tgd import unique_markers
from textgraph.prompts import fence, load, render_file
from textgraph.structured import call_delimited
from textgraph.variable import Variable

ORIGINS = {"incumbent": "incumbent", "induced": "APE induction", "variation": "APE variation"}


class APE(Optimizer):
    """`APE(num_proposals=50, top_k=5, resample_rounds=2, eval_subset=20, seed=0, *,
    engine=None, demos_per_proposal=5, concurrency=None, verbose=True, max_tokens=None)`.

    num_proposals: instructions induced per parameter in round 0, and variations per
    resampling round (split evenly over the top_k). top_k: candidates that survive
    successive halving and are varied in the next round (at most num_proposals).
    resample_rounds: rounds of variation after the induction round. eval_subset:
    validation examples (training examples when there is no validation set) each
    round scores its population on. demos_per_proposal: training examples shown to
    each induction call. engine: the model that writes instructions (default: the
    Trainer's critic_engine, then its engine, then the context's). concurrency: calls
    in flight and candidates scored at once (default: all). max_tokens: cap on each
    proposal reply. label_field: the example field holding the expected output
    (default: answer, label, output, target or y, whichever the examples have).
    parameters: the Variables to search (default: every text parameter of the module).
    min_rung: the fewest examples a halving rung scores on (pass/fail metrics tie on one
    or two examples, and ties are cut by proposal order).
    One Trainer step runs one round: `max_steps` should be at least `steps_needed`.
    """

    name: ClassVar[str] = "ape"

    def __init__(
        self,
        num_proposals: int = 50,
        top_k: int = 5,
        resample_rounds: int = 2,
        eval_subset: int = 20,
        seed: int = 0,
        *,
        engine: Engine | str | None = None,
        demos_per_proposal: int = 5,
        concurrency: int | None = None,
        verbose: bool = True,
        max_tokens: int | None = None,
        label_field: str | None = None,
        parameters: Iterable[Variable] | None = None,
        min_rung: int = 4,
    ) -> None:
        check_int("num_proposals", num_proposals, minimum=1)
        check_int("top_k", top_k, minimum=1)
        if top_k > num_proposals:
            raise ArgumentError(
                f"top_k ({top_k}) must be at most num_proposals ({num_proposals}): the top_k "
                "are chosen from the proposals; lower top_k or raise num_proposals"
            )
        check_int("resample_rounds", resample_rounds, minimum=0, instead="0 means induction only")
        check_int("eval_subset", eval_subset, minimum=1)
        check_int("seed", seed, minimum=None)
        check_int("demos_per_proposal", demos_per_proposal, minimum=1)
        check_int("min_rung", min_rung, minimum=1)
        check_optional_int("concurrency", concurrency, minimum=1, none_means="no limit")
        check_optional_int("max_tokens", max_tokens, minimum=1, none_means="the engine's default")
        if not isinstance(verbose, bool):
            raise ArgumentError(f"verbose must be True or False, got {verbose!r}")
        if label_field is not None and not (isinstance(label_field, str) and label_field):
            raise ArgumentError(
                f"label_field must be an example field name (str) or None, got {label_field!r}"
            )
        engine = check_engine(engine, "APE(engine)")
        self.num_proposals, self.top_k = num_proposals, top_k
        self.resample_rounds, self.eval_subset, self.seed = resample_rounds, eval_subset, seed
        self.engine, self.demos_per_proposal = engine, demos_per_proposal
        self.concurrency, self.verbose, self.max_tokens = concurrency, verbose, max_tokens
        self.label_field, self.min_rung = label_field, min_rung
        self.parameters = _check_parameters(parameters)
        self._names: list[str] | None = None  # the text parameters searched, in order
        self._index = 0  # which of them is being searched
        self._round = 0  # its next round
        self._population: list[dict[str, Any]] = []  # the last round's, best first
        self._rounds: list[dict[str, Any]] = []  # one summary per round run
        self.projection: str = ""

    # --- the loop's view ------------------------------------------------------------

    @property
    def rounds_per_parameter(self) -> int:
        return 1 + self.resample_rounds

    @property
    def steps_needed(self) -> int:
        """Trainer steps to run every round of every parameter (set max_steps at least
        this). Known once the parameters are: given as `parameters=`, or after the first
        step; before that, `steps_for(module)` counts a module's."""
        if self._names is not None:
            return self.rounds_per_parameter * len(self._names)
        if self.parameters is not None:
            texts = [p for p in self.parameters if not isinstance(p, Demos)]
            return self.rounds_per_parameter * len(texts)
        raise ArgumentError(
            "APE.steps_needed depends on how many text parameters the module has: use "
            "ape.steps_for(module), or pass APE(..., parameters=module.parameters())"
        )

    def steps_for(self, module: Module) -> int:
        """Trainer steps APE needs to search `module`'s text parameters."""
        if not isinstance(module, Module):
            raise ArgumentError(f"steps_for needs a tg.Module, got {type(module).__name__}")
        return self.rounds_per_parameter * len(self._select(dict(module.named_parameters())))

    def finished(self) -> str | None:
        if self._names is not None and self._index >= len(self._names):
            return (
                f"every text parameter searched ({len(self._names)} x "
                f"{self.rounds_per_parameter} rounds)"
            )
        return None

    async def propose(self, ctx: StepContext) -> list[Candidate]:
        names = self._resolve(ctx)
        if self._index >= len(names):
            ctx.note("APE: every text parameter was already searched")
            return []
        pool = _pool(ctx)
        if not self.projection:
            self.projection = self._project(ctx, len(names), len(pool))
            ctx.note(self.projection)
            if self.verbose:
                print(self.projection, file=sys.stderr)
        name, r = names[self._index], self._round
        param = ctx.parameters[name]
        engine = resolve_engine(
            self.engine,
            ctx.critic_engine,
            ctx.engine,
            what="APE proposals",
            role="optimizer_engine",
        )
        step = _step_text(ctx.module, name, param)
        if r == 0:
            asked, fresh = await self._induce(ctx, engine, name, param, step)
            value = ctx.current.values[name]
            incumbent = _entry(value, "incumbent", r, parents=[], parent_value=None)
            entries = [incumbent, *fresh]
        else:
            parents = [dict(e) for e in self._population[: self.top_k]]
            asked, fresh = await self._vary(ctx, engine, name, param, step, parents)
            entries = parents + fresh
        population = self._admit(ctx, name, entries, len(fresh))
        subset = _subset(pool, self.eval_subset, f"{self.seed}:subset:{name}:{r}")
        ranked, summary = await self._halve(ctx, name, population, subset)
        self._population = ranked
        best = ranked[0]
        summary.update(
            parameter=name,
            round=r,
            asked=asked,
            usable=len(fresh),
            best=best["value"],
            best_score=best["score"],
            top=[{"value": e["value"], "score": e["score"]} for e in ranked[: self.top_k]],
        )
        self._rounds.append(summary)
        self._note_round(ctx, name, r, summary, ranked, len(subset))
        candidate = self._candidate(ctx, name, best, selected_in=r, subset=len(subset))
        self._round += 1
        if self._round >= self.rounds_per_parameter:
            self._index, self._round = self._index + 1, 0
        return [candidate]

    def observe(self, outcomes: list[CandidateOutcome]) -> None:
        if not self._rounds:
            return
        last = self._rounds[-1]
        for outcome in outcomes:
            details = outcome.candidate.details
            if isinstance(details, dict) and details.get("optimizer") == self.name:
                last["status"] = outcome.status

    # --- parameters ------------------------------------------------------------------

    def _select(self, params: dict[str, Variable]) -> list[str]:
        chosen = list(params)
        if self.parameters is not None:
            missing = [v for v in self.parameters if all(v is not p for p in params.values())]
            if missing:
                raise ArgumentError(
                    f"APE(parameters=...): {missing[0].id} ({missing[0].role_description}) is "
                    "not a parameter of the module being trained (requires_grad=True); pass "
                    "the module's own parameters or leave parameters=None"
                )
            wanted = {id(v) for v in self.parameters}
            chosen = [n for n in chosen if id(params[n]) in wanted]
        names = [n for n in chosen if not isinstance(params[n], Demos)]
        if not names:
            raise ArgumentError(
                "APE found no text parameter to search: it writes instructions, and the "
                "module's trainable parameters are "
                + (
                    "all tg.Demos. Make an instruction trainable (tg.Variable(..., "
                    "requires_grad=True) as an LLMCall's system prompt), or search "
                    "demonstrations with tg.optim.BootstrapFewShot or tg.optim.MIPRO"
                    if chosen
                    else "none. Make an instruction trainable: tg.Variable(..., "
                    "requires_grad=True) as an LLMCall's system prompt"
                )
            )
        return names

    def _resolve(self, ctx: StepContext) -> list[str]:
        names = self._select(ctx.parameters)
        if self._names is None:
            self._names = names
        elif names != self._names:
            raise ArgumentError(
                f"APE was searching the text parameters {self._names} but the module now has "
                f"{names}; start a new run (or resume with the same module)"
            )
        return names

    # --- proposals -------------------------------------------------------------------

    async def _induce(
        self, ctx: StepContext, engine: Engine, name: str, param: Variable, step: str
    ) -> tuple[int, list[dict[str, Any]]]:
        """Round 0: instructions induced from seeded samples of training examples."""
        examples = list(ctx.train)
        if not examples:
            raise ArgumentError("APE induces instructions from training examples: give train=")
        label = _label_of(examples, self.label_field)
        layout = (
            "Each example shows the program's input fields, then the expected output."
            if label is not None
            else "Each example lists all of its fields: the program's inputs and the "
            "expected output among them."
        )
        program = describe_program(ctx.module, None)
        count = min(self.demos_per_proposal, len(examples))
        parents = [ctx.current.id]

        def request(k: int) -> tuple[ChatRequest, str, str]:
            rng = random.Random(f"{self.seed}:induce:{name}:{k}")
            shown = rng.sample(examples, count)
            blocks = "\n".join(
                f"<EXAMPLE>\n{fence(_example_text(e, label))}\n</EXAMPLE>" for e in shown
            )
            data = "\n".join([program, param.value, blocks])
            start, end = unique_markers(data, f"ape|{self.seed}|{name}|0|{k}")
            user = render_file(
                "ape_induce_user",
                program=fence(program),
                name=name,
                step=step,
                role=param.role_description,
                value=fence(param.value),
                count=str(count),
                layout=layout,
                examples=blocks,
                start=start,
                end=end,
            )
            return self._request("ape_induce_system", user, param, name, 0, k), start, end

        replies = await self._gather(
            ctx, engine, name, 0, [request(k) for k in range(self.num_proposals)]
        )
        fresh = [
            _entry(text, "induced", 0, parents=parents, parent_value=None, proposal=k)
            for k, text in enumerate(replies)
            if text is not None
        ]
        return self.num_proposals, fresh

    async def _vary(
        self,
        ctx: StepContext,
        engine: Engine,
        name: str,
        param: Variable,
        step: str,
        parents: list[dict[str, Any]],
    ) -> tuple[int, list[dict[str, Any]]]:
        """Rounds 1..: variations of each of the previous round's top_k."""
        r = self._round
        share, extra = divmod(self.num_proposals, len(parents))
        jobs: list[tuple[dict[str, Any], int]] = []
        for i, parent in enumerate(parents):
            jobs += [(parent, i)] * max(1, share + (1 if i < extra else 0))

        def request(k: int, parent: dict[str, Any]) -> tuple[ChatRequest, str, str]:
            start, end = unique_markers(parent["value"], f"ape|{self.seed}|{name}|{r}|{k}")
            user = render_file(
                "ape_vary_user",
                name=name,
                step=step,
                role=param.role_description,
                value=fence(parent["value"]),
                start=start,
                end=end,
            )
            return self._request("ape_vary_system", user, param, name, r, k), start, end

        replies = await self._gather(
            ctx, engine, name, r, [request(k, parent) for k, (parent, _) in enumerate(jobs)]
        )
        fresh = []
        for k, ((parent, _), text) in enumerate(zip(jobs, replies, strict=True)):
            if text is None:
                continue
            parent_id = values_id({**ctx.current.values, name: parent["value"]})
            fresh.append(
                _entry(
                    text,
                    "variation",
                    r,
                    parents=[parent_id],
                    parent_value=parent["value"],
                    proposal=k,
                )
            )
        return len(jobs), fresh

    def _request(
        self, system: str, user: str, param: Variable, name: str, r: int, k: int
    ) -> ChatRequest:
        return ChatRequest.from_prompts(
            load(system),
            user,
            purpose="ape",
            temperature=1.0,
            seed=_derived_seed(self.seed, name, r, k),
            max_tokens=self.max_tokens,
            variable_ids=[param.id],
            metadata={"optimizer": self.name, "parameter": name, "round": r},
        )

    async def _gather(
        self,
        ctx: StepContext,
        engine: Engine,
        name: str,
        r: int,
        requests: Sequence[tuple[ChatRequest, str, str]],
    ) -> list[str | None]:
        """Each request's instruction, or None (noted) when its reply was unusable."""
        limit = asyncio.Semaphore(self.concurrency or max(1, len(requests)))

        async def one(k: int, request: ChatRequest, start: str, end: str) -> str | None:
            async with limit:
                try:
                    reply = await call_delimited(engine, request, start, end)
                except EngineError as exc:
                    if is_fatal(exc):
                        raise
                    ctx.note(f"APE {name!r} round {r}: proposal {k} failed ({exc}); skipped")
                    return None
            if not reply.ok:
                ctx.note(f"APE {name!r} round {r}: proposal {k} unusable ({reply.error}); skipped")
                return None
            return str(reply.value).strip() or None

        return list(await asyncio.gather(*(one(k, *req) for k, req in enumerate(requests))))

    def _admit(
        self, ctx: StepContext, name: str, entries: list[dict[str, Any]], fresh: int
    ) -> list[dict[str, Any]]:
        """Distinct values that pass the run's filters (max_chars, reject_copies), in
        order; the entries before the fresh ones (incumbent, parents) always stay."""
        kept: list[dict[str, Any]] = []
        seen: set[str] = set()
        duplicates = filtered = 0
        keep_always = len(entries) - fresh
        for i, entry in enumerate(entries):
            if entry["value"] in seen:
                duplicates += 1
                continue
            if i >= keep_always:
                candidate = Candidate({**ctx.current.values, name: entry["value"]})
                survivor, reasons = ctx.filter(candidate)
                if survivor is None or survivor.id != candidate.id:
                    filtered += 1
                    ctx.note(
                        f"APE {name!r}: proposal {entry['proposal']} filtered out "
                        f"({'; '.join(reasons) or 'by the run filters'})"
                    )
                    continue
            seen.add(entry["value"])
            kept.append(entry)
        if duplicates:
            ctx.note(f"APE {name!r}: {duplicates} duplicate proposal(s) dropped")
        return kept

    # --- successive halving ---------------------------------------------------------

    async def _halve(
        self,
        ctx: StepContext,
        name: str,
        population: list[dict[str, Any]],
        subset: list[Any],
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The population ranked best first (survivors of the last rung by their score on
        the whole subset, then the others by when they were dropped and their score)."""
        counts, sizes = halving_schedule(len(population), self.top_k, len(subset), self.min_rung)
        alive = list(range(len(population)))
        dropped: list[list[int]] = []
        ran = 0
        failed = 0
        order = alive
        for rung, (count, size) in enumerate(zip(counts, sizes, strict=True)):
            assert len(alive) == count
            results = await self._score(ctx, name, [population[i] for i in alive], subset[:size])
            for i, result in zip(alive, results, strict=True):
                mean = result.gate_mean()
                population[i]["score"] = 0.0 if mean is None else round(mean, 6)
                population[i]["examples"] = size
                population[i]["rung"] = rung
                ran += len(result.evaluated)
                failed += result.n_failed if rung == len(counts) - 1 else 0
            order = sorted(alive, key=lambda i: (-population[i]["score"], i))
            if rung < len(counts) - 1:
                keep = counts[rung + 1]
                dropped.append(order[keep:])
                alive = order[:keep]
        ranked = [population[i] for i in order]
        for gone in reversed(dropped):
            ranked += [population[i] for i in gone]
        summary = {
            "population": len(population),
            "rungs": [[c, s] for c, s in zip(counts, sizes, strict=True)],
            "example_runs": ran,
            "every_on_subset": len(population) * len(subset),
            "failed": failed,
        }
        return ranked, summary

    async def _score(
        self, ctx: StepContext, name: str, entries: list[dict[str, Any]], examples: list[Any]
    ) -> list[EvalResult]:
        limit = asyncio.Semaphore(self.concurrency or max(1, len(entries)))

        async def one(entry: dict[str, Any]) -> EvalResult:
            async with limit:
                candidate = Candidate({**ctx.current.values, name: entry["value"]})
                return await ctx.evaluate(candidate, examples)

        return list(await asyncio.gather(*(one(e) for e in entries)))

    # --- candidates, notes, projection ------------------------------------------------

    def _candidate(
        self, ctx: StepContext, name: str, entry: dict[str, Any], *, selected_in: int, subset: int
    ) -> Candidate:
        details = {
            "optimizer": self.name,
            "parameter": name,
            "round": selected_in,
            "kind": entry["kind"],
            "proposed_in_round": entry["born"],
            "proposal": entry["proposal"],
            "parent": entry["parent_value"],
            "subset_score": entry["score"],
            "subset_examples": subset,
        }
        origin = ORIGINS[entry["kind"]]
        if entry["kind"] != "incumbent":
            origin = f"{origin} (round {entry['born']}), best of round {selected_in}"
        return Candidate(
            {**ctx.current.values, name: entry["value"]},
            parents=list(entry["parents"]),
            origin=origin,
            details=details,
        )

    def _note_round(
        self,
        ctx: StepContext,
        name: str,
        r: int,
        summary: dict[str, Any],
        ranked: list[dict[str, Any]],
        n: int,
    ) -> None:
        what = "induction" if r == 0 else "resampling"
        ctx.note(
            f"APE {name!r} round {r} of {self.resample_rounds} ({what}): {summary['usable']} of "
            f"{summary['asked']} proposals usable; population {summary['population']}"
        )
        rungs = " -> ".join(f"{c} on {s}" for c, s in summary["rungs"])
        ctx.note(
            f"successive halving on {n} examples: {rungs}; {summary['example_runs']} example "
            f"runs (every candidate on the whole subset: {summary['every_on_subset']})"
        )
        top = "; ".join(
            f"{i}. {e['score']:.3f} {_short(e['value'])} ({e['kind']})"
            for i, e in enumerate(ranked[: self.top_k], 1)
        )
        ctx.note(f"top {min(self.top_k, len(ranked))}: {top}")
        if summary["failed"]:
            ctx.note(f"{summary['failed']} example run(s) of the last rung failed (scored as 0)")

    def _project(self, ctx: StepContext, n_params: int, n_pool: int) -> str:
        per_example = max(1, len([op for op in ops_of(ctx.module) if op.calls_llm]))
        n = min(self.eval_subset, n_pool)
        first = halving_cost(self.num_proposals + 1, self.top_k, n, self.min_rung)
        later = halving_cost(self.top_k + self.num_proposals, self.top_k, n, self.min_rung)
        proposals = n_params * self.num_proposals * self.rounds_per_parameter
        evals = n_params * (first + self.resample_rounds * later) * per_example
        steps = n_params * self.rounds_per_parameter
        full = steps * len(ctx.val) * per_example
        total = proposals + evals + full
        return (
            f"APE projects at most {total} LLM calls for its search (the Trainer's initial "
            f"validation and test scoring come on top; an unusable proposal reply adds one "
            f"repair call): {n_params} text parameter(s) x {self.rounds_per_parameter} "
            f"rounds = {steps} steps; {proposals} proposal calls ({self.num_proposals} per "
            f"round); successive halving on {n} examples x {per_example} call(s): "
            f"{first} example runs for round 0, {later} per resampling round, {evals} in "
            f"all; {steps} full validations x {len(ctx.val)} = {full} "
            "(examples already scored for a candidate are never re-run)"
        )

    # --- state -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "names": self._names,
            "index": self._index,
            "round": self._round,
            "population": [dict(e) for e in self._population],
            "rounds": [dict(s) for s in self._rounds],
            "projection": self.projection,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = state.get("names")
        self._names = list(names) if names is not None else None
        self._index = int(state.get("index", 0))
        self._round = int(state.get("round", 0))
        self._population = [dict(e) for e in state.get("population", [])]
        self._rounds = [dict(s) for s in state.get("rounds", [])]
        self.projection = state.get("projection", "")

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_proposals": self.num_proposals,
            "top_k": self.top_k,
            "resample_rounds": self.resample_rounds,
            "eval_subset": self.eval_subset,
            "seed": self.seed,
            "demos_per_proposal": self.demos_per_proposal,
            "concurrency": self.concurrency,
            "max_tokens": self.max_tokens,
            "label_field": self.label_field,
            "min_rung": self.min_rung,
            "parameters": (
                None if self.parameters is None else [p.role_description for p in self.parameters]
            ),
        }


# --- helpers ---------------------------------------------------------------------------


def halving_schedule(
    population: int, top_k: int, examples: int, min_rung: int = 1
) -> tuple[list[int], list[int]]:
    """Successive halving: candidates alive at each rung (halved, never below top_k) and
    the subset prefix each rung scores on (doubling, at least min_rung, the last the whole
    subset)."""
    counts = [population]
    while counts[-1] > top_k:
        counts.append(max(top_k, math.ceil(counts[-1] / 2)))
    last = len(counts) - 1
    sizes = [
        min(examples, max(min_rung, 1, math.ceil(examples / 2 ** (last - j))))
        for j in range(len(counts))
    ]
    return counts, sizes


def halving_cost(population: int, top_k: int, examples: int, min_rung: int = 1) -> int:
    """Example runs of one halving with nothing cached (each rung runs only new examples)."""
    counts, sizes = halving_schedule(population, top_k, examples, min_rung)
    return sum(c * (s - p) for c, s, p in zip(counts, sizes, [0, *sizes[:-1]], strict=True))


def _check_parameters(parameters: Iterable[Variable] | None) -> list[Variable] | None:
    if parameters is None:
        return None
    if isinstance(parameters, (str, Variable)) or not isinstance(parameters, Iterable):
        raise ArgumentError(
            "APE(parameters=...) takes an iterable of the module's Variables "
            "(e.g. module.parameters()), or None for every text parameter"
        )
    out = list(parameters)
    for p in out:
        if not isinstance(p, Variable):
            raise ArgumentError(
                f"APE(parameters=...) must hold tg.Variable parameters, got {type(p).__name__}"
            )
    if not [p for p in out if not isinstance(p, Demos)]:
        raise ArgumentError(
            "APE(parameters=...) holds no text parameter (tg.Demos are not searched); "
            "pass the instruction Variables to search, or None for every text parameter"
        )
    return out


def _pool(ctx: StepContext) -> list[Any]:
    pool = list(ctx.val) if ctx.val else list(ctx.train)
    if not pool:
        raise ArgumentError("APE needs validation (or training) examples to score proposals")
    return pool


def _subset(pool: list[Any], size: int, key: str) -> list[Any]:
    """A seeded sample, in sampled order: each rung scores a prefix of it."""
    picked = random.Random(key).sample(range(len(pool)), min(size, len(pool)))
    return [pool[i] for i in picked]


def _entry(
    value: str,
    kind: str,
    born: int,
    *,
    parents: list[str],
    parent_value: str | None,
    proposal: int | None = None,
) -> dict[str, Any]:
    return {
        "value": value,
        "kind": kind,
        "born": born,
        "proposal": proposal,
        "parents": list(parents),
        "parent_value": parent_value,
        "score": None,
        "examples": 0,
        "rung": None,
    }


def _derived_seed(seed: int, name: str, r: int, k: int) -> int:
    digest = hashlib.sha256(f"ape|{seed}|{name}|{r}|{k}".encode()).hexdigest()
    return int(digest[:8], 16) % 2**31


def _step_text(module: Module, name: str, param: Variable) -> str:
    op = next(
        (o for o in ops_of(module) if o.calls_llm and getattr(o, "system_prompt", None) is param),
        None,
    )
    if op is None:
        return f"read by every step that uses the parameter '{name}'"
    role = getattr(op, "role_description", op.name)
    return f"the instruction of the language-model call producing '{role}'"


def _fields(example: Any) -> dict[str, Any] | None:
    from pydantic import BaseModel

    if isinstance(example, BaseModel):
        example = example.model_dump()
    return example if isinstance(example, dict) else None


def _label_of(examples: Sequence[Any], label_field: str | None) -> str | None:
    """The field holding the expected output: label_field, else the first LABEL_FIELDS
    name the examples have (None: show every field as it is)."""
    first = _fields(examples[0]) if examples else None
    if first is None:
        if label_field is not None:
            raise ArgumentError(
                f"label_field={label_field!r}, but the examples are not dicts or pydantic "
                "models; leave label_field=None"
            )
        return None
    if label_field is not None:
        if not any(label_field in (_fields(e) or {}) for e in examples):
            raise ArgumentError(
                f"label_field={label_field!r}: no example has that field; the first has "
                f"{sorted(first)}"
            )
        return label_field
    return next((k for k in LABEL_FIELDS if k in first), None)


def _example_text(example: Any, label: str | None) -> str:
    data = _fields(example)
    if data is None:
        return str(example)
    if label is None or label not in data:
        return "\n".join(f"{k}: {v}" for k, v in data.items())
    inputs = "\n".join(f"{k}: {v}" for k, v in data.items() if k != label)
    return f"Input:\n{inputs}\nOutput: {data[label]}"


def _short(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")
