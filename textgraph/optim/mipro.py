"""MIPRO: a joint search over instructions and demonstrations with Optuna's TPE.

1. Bootstrap demo sets for every tg.Demos parameter (the demo optimizers'
   machinery: traces of passing runs, labeled fill, seeded subsets).
2. Propose instructions for every text parameter, grounded in a summary of
   the dataset (written while step 1 runs), the program's structure read
   from a traced run's graph, and the step's own inputs and outputs in
   passing runs (prompts/mipro_*.txt); the proposals run concurrently.
3. Search combinations (one instruction and one demo set per parameter)
   with `TPESampler(multivariate=True)`: trials run concurrently, each
   scored on a seeded validation minibatch; every `full_eval_every` trials
   the best combination by minibatch average goes to the loop, which scores
   it on the whole validation set and gates it against the incumbent.

The study is rebuilt from the recorded trials before each ask, with a
sampler seeded by (seed, trial number): a resumed run asks exactly what an
uninterrupted one would. The trials live in the optimizer's checkpointed
state and in each step's notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import sys
from typing import Any, ClassVar

from textgraph._checks import check_int, check_optional_int
from textgraph.candidate import Candidate
from textgraph.demos import Demos, render_demos
from textgraph.engines.base import ChatRequest, Engine
from textgraph.engines.context import check_engine, resolve_engine
from textgraph.errors import ArgumentError, ConfigurationError
from textgraph.optim.base import Optimizer
from textgraph.optim.context import StepContext
from textgraph.optim.demos import BootstrapResult, _check_common, demo_sets, ops_of
from textgraph.optim.program import describe_program, example_text
from textgraph.optim.tgd import unique_markers
from textgraph.prompts import fence, load, render_file
from textgraph.structured import call_delimited

logger = logging.getLogger("textgraph.optim")

#: Presets for `auto`: instruction candidates per parameter, demo sets per parameter, trials.
AUTO: dict[str, tuple[int, int, int]] = {
    "light": (4, 4, 12),
    "medium": (6, 8, 25),
    "heavy": (10, 12, 50),
}


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigurationError(
            "MIPRO searches with Optuna's TPE sampler: pip install 'textgraph[search]' "
            "(or pip install optuna)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class MIPRO(Optimizer):
    """`MIPRO(auto="light"|"medium"|"heavy", num_instructions=None, num_demo_sets=None,
    trials=None, minibatch_size=35, full_eval_every=5, seed=0)`.

    num_instructions / num_demo_sets: options per parameter, the current value included
    (default from `auto`). trials: combinations scored on minibatches. engine: the model
    that writes instructions (default: the Trainer's critic_engine, then the context's).
    max_tokens: cap on each proposal reply (default: the engine's).
    concurrency: trials scored at once (default full_eval_every). verbose: print the
    projected number of calls before the search. The bootstrap options are those of
    BootstrapFewShot.
    """

    name: ClassVar[str] = "mipro"

    def __init__(
        self,
        auto: str | None = "light",
        num_instructions: int | None = None,
        num_demo_sets: int | None = None,
        trials: int | None = None,
        minibatch_size: int = 35,
        full_eval_every: int = 5,
        seed: int = 0,
        *,
        engine: Engine | str | None = None,
        max_bootstrapped: int = 4,
        max_labeled: int = 4,
        metric_threshold: float | None = None,
        teacher: Engine | str | None = None,
        max_rounds: int = 1,
        label_field: str | None = None,
        concurrency: int | None = None,
        examples_shown: int = 10,
        verbose: bool = True,
        max_tokens: int | None = None,
    ) -> None:
        if auto is not None and auto not in AUTO:
            raise ArgumentError(f"auto must be one of {sorted(AUTO)} or None, got {auto!r}")
        if auto is None and None in (num_instructions, num_demo_sets, trials):
            raise ArgumentError("with auto=None give num_instructions, num_demo_sets and trials")
        preset = AUTO[auto] if auto is not None else (0, 0, 0)
        for label, value in (
            ("num_instructions", num_instructions),
            ("num_demo_sets", num_demo_sets),
            ("trials", trials),
            ("concurrency", concurrency),
        ):
            check_optional_int(label, value, minimum=1, none_means="the default")
        check_int("minibatch_size", minibatch_size, minimum=1)
        check_int("full_eval_every", full_eval_every, minimum=1)
        check_int("examples_shown", examples_shown, minimum=1)
        check_int("seed", seed, minimum=None)
        teacher = _check_common(
            max_bootstrapped, max_labeled, metric_threshold, teacher, max_rounds
        )
        engine = check_engine(engine, "MIPRO(engine)")
        self.auto = auto
        self.num_instructions = num_instructions or preset[0]
        self.num_demo_sets = num_demo_sets or preset[1]
        self.trials = trials or preset[2]
        self.minibatch_size, self.full_eval_every, self.seed = (
            minibatch_size,
            full_eval_every,
            seed,
        )
        self.engine, self.teacher = engine, teacher
        self.max_bootstrapped, self.max_labeled = max_bootstrapped, max_labeled
        self.metric_threshold, self.max_rounds = metric_threshold, max_rounds
        self.label_field = label_field
        self.concurrency = concurrency or full_eval_every
        self.examples_shown, self.verbose = examples_shown, verbose
        if max_tokens is not None:
            check_int("max_tokens", max_tokens, minimum=1)
        self.max_tokens = max_tokens
        _optuna()  # fail at construction, not after the bootstrap, when Optuna is missing
        self._space: dict[str, list[str]] | None = None  # "instruction:x"/"demos:y" -> options
        self._trials: list[dict[str, Any]] = []
        self._sent: list[str] = []  # combinations already sent to full evaluation
        self.projection: str = ""

    # --- the loop's view ----------------------------------------------------------

    @property
    def steps_needed(self) -> int:
        """Trainer steps to run every trial (set max_steps at least this)."""
        return math.ceil(self.trials / self.full_eval_every)

    def finished(self) -> str | None:
        if self._space is not None and len(self._trials) >= self.trials:
            return f"all {self.trials} trials run"
        return None

    async def propose(self, ctx: StepContext) -> list[Candidate]:
        if self._space is None:
            await self._prepare(ctx)
        assert self._space is not None
        todo = min(self.full_eval_every, self.trials - len(self._trials))
        while todo > 0:
            group = min(self.concurrency, todo)
            await self._run_trials(ctx, group)
            todo -= group
        return self._best_unsent(ctx)

    # --- 1 + 2: demo sets and instruction candidates -----------------------------

    async def _prepare(self, ctx: StepContext) -> None:
        params = ctx.parameters
        demos = {n: p for n, p in params.items() if isinstance(p, Demos)}
        texts = {n: p for n, p in params.items() if not isinstance(p, Demos)}
        if not demos and not texts:
            raise ArgumentError("MIPRO found no parameter to search (requires_grad=True)")
        pool = self._minibatch_pool(ctx)
        llm_ops = [op for op in ops_of(ctx.module) if op.calls_llm]
        per_example = max(1, len(llm_ops))
        self.projection = self._project(len(texts), per_example, len(ctx.train), len(pool))
        ctx.note(self.projection)
        if self.verbose:
            print(self.projection, file=sys.stderr)
        # The dataset summary needs no trace: it runs while the bootstrap does.
        engine = summary = None
        if texts and self.num_instructions > 1:
            engine = resolve_engine(
                self.engine,
                ctx.critic_engine,
                ctx.engine,
                what="MIPRO instruction proposals",
                role="optimizer_engine",
            )
            summary = asyncio.ensure_future(self._describe_dataset(ctx, engine))
        try:
            sets, found = await demo_sets(
                ctx,
                demos,
                count=self.num_demo_sets,
                max_bootstrapped=self.max_bootstrapped,
                max_labeled=self.max_labeled,
                threshold=self.metric_threshold,
                teacher=self.teacher,
                max_rounds=self.max_rounds,
                label_field=self.label_field,
                min_tried=min(len(ctx.train), self.examples_shown),
            )
        except BaseException:
            if summary is not None:
                summary.cancel()
                with contextlib.suppress(BaseException):
                    await summary
            raise
        ctx.note(
            f"bootstrap: {len(found.used)} of {found.tried} traced runs passed; demo sets: "
            + (", ".join(f"{n}: {len(v)}" for n, v in sets.items()) or "none")
        )
        dataset = await summary if summary is not None else ""
        instructions = await self._propose_instructions(ctx, texts, found, engine, dataset)
        space: dict[str, list[str]] = {}
        for name, options in instructions.items():
            space[f"instruction:{name}"] = options
        for name, options in sets.items():
            space[f"demos:{name}"] = options
        self._space = space
        ctx.note("search space: " + ", ".join(f"{k} ({len(v)} options)" for k, v in space.items()))

    def _project(self, n_texts: int, per_example: int, n_train: int, n_pool: int) -> str:
        # The bootstrap traces chunks until enough runs pass: at least one chunk, at most
        # every training example once per round.
        first = min(n_train, max(self.examples_shown, 2 * self.max_bootstrapped * 3, 4))
        most = n_train * self.max_rounds
        proposals = (1 + (self.num_instructions - 1) * n_texts) if n_texts else 0
        batch = min(self.minibatch_size, n_pool)
        trial_calls = self.trials * batch * per_example
        full = self.steps_needed * n_pool * per_example
        total = most * per_example + proposals + trial_calls + full
        return (
            f"MIPRO projects at most {total} LLM calls for its search (the Trainer's initial "
            f"validation and test scoring come on top): bootstrap {first * per_example} to "
            f"{most * per_example} ({first}-{most} traced runs x {per_example} call(s); it "
            f"stops once enough pass), {proposals} instruction proposals, "
            f"{self.trials} trials x {batch} examples x {per_example} = {trial_calls}, "
            f"{self.steps_needed} full evaluations x {n_pool} = {full} "
            "(examples already scored for a combination are never re-run)"
        )

    async def _propose_instructions(
        self,
        ctx: StepContext,
        texts: dict[str, Any],
        found: BootstrapResult,
        engine: Engine | None,
        dataset: str,
    ) -> dict[str, list[str]]:
        """Instruction options per text parameter; `engine` writes them, `dataset` is the
        dataset summary (both from _prepare; unused when no proposal is needed)."""
        if not texts:
            return {}
        if self.num_instructions == 1 or engine is None:
            return {n: [p.value] for n, p in texts.items()}
        output = next((v for v in found.outputs if v is not None), None)
        program = describe_program(ctx.module, output)
        ops = [op for op in ops_of(ctx.module) if op.calls_llm]
        tips = [t for t in load("mipro_tips").splitlines() if t.strip()]
        result: dict[str, list[str]] = {}
        jobs = []
        for name, param in texts.items():
            op = next((o for o in ops if getattr(o, "system_prompt", None) is param), None)
            step = (
                f"the language-model call producing '{op.role_description}'"  # type: ignore[attr-defined]
                if op is not None
                else f"every step that reads the parameter '{name}'"
            )
            shown = found.by_op.get(id(op), [])[: self.max_bootstrapped] if op else []
            for k in range(1, self.num_instructions):
                jobs.append((name, param, step, shown, tips[(k - 1) % len(tips)], k))

        async def one(job: tuple[Any, ...]) -> tuple[str, str | None]:
            name, param, step, shown, tip, k = job
            data = "\n".join([dataset, program, param.value, render_demos(shown), tip])
            start, end = unique_markers(data, f"mipro|{self.seed}|{name}|{k}")
            user = render_file(
                "mipro_instruction_user",
                dataset=fence(dataset),
                program=fence(program),
                step=step,
                role=param.role_description,
                value=fence(param.value),
                demos=fence(render_demos(shown)) if shown else "(none passed yet)",
                tip=tip,
                start=start,
                end=end,
            )
            request = ChatRequest.from_prompts(
                load("mipro_instruction_system"),
                user,
                purpose="propose",
                temperature=1.0,
                max_tokens=self.max_tokens,
                seed=self.seed * 1000 + k,
                variable_ids=[param.id],
                metadata={"optimizer": self.name, "parameter": name},
            )
            reply = await call_delimited(engine, request, start, end)
            if not reply.ok:
                ctx.note(f"{name}: instruction proposal {k} unusable ({reply.error})")
                return name, None
            return name, reply.value

        replies = await asyncio.gather(*(one(job) for job in jobs))
        for name, param in texts.items():
            options = [param.value]
            for owner, text in replies:
                if owner == name and text and text not in options:
                    options.append(text)
            result[name] = options
        return result

    async def _describe_dataset(self, ctx: StepContext, engine: Engine) -> str:
        rng = random.Random(f"{self.seed}:dataset")
        sample = rng.sample(list(ctx.train), min(self.examples_shown, len(ctx.train)))
        blocks = "\n".join(f"<EXAMPLE>\n{fence(example_text(e))}\n</EXAMPLE>" for e in sample)
        start, end = unique_markers(blocks, f"mipro-dataset|{self.seed}")
        request = ChatRequest.from_prompts(
            load("mipro_dataset_system"),
            render_file(
                "mipro_dataset_user", count=str(len(sample)), examples=blocks, start=start, end=end
            ),
            purpose="propose",
            max_tokens=self.max_tokens,
            metadata={"optimizer": self.name, "what": "dataset summary"},
        )
        reply = await call_delimited(engine, request, start, end)
        if not reply.ok:
            ctx.note(f"dataset summary unusable ({reply.error}); proposing without it")
            return "(no description available)"
        return str(reply.value)

    # --- 3: the search -----------------------------------------------------------------

    def _minibatch_pool(self, ctx: StepContext) -> list[Any]:
        pool = list(ctx.val) if ctx.val else list(ctx.train)
        if not pool:
            raise ArgumentError("MIPRO needs validation (or training) examples to score trials")
        return pool

    async def _run_trials(self, ctx: StepContext, count: int) -> None:
        optuna = _optuna()
        assert self._space is not None
        searched = {k: v for k, v in self._space.items() if len(v) > 1}
        dists = {
            k: optuna.distributions.CategoricalDistribution(list(range(len(v))))
            for k, v in searched.items()
        }
        number = len(self._trials)
        asked: list[dict[str, int]] = []
        if dists:
            sampler = optuna.samplers.TPESampler(
                seed=self.seed * 100_003 + number, multivariate=True, constant_liar=True
            )
            study = optuna.create_study(direction="maximize", sampler=sampler)
            for t in self._trials:
                study.add_trial(
                    optuna.trial.create_trial(
                        params=t["params"], distributions=dists, value=t["value"]
                    )
                )
            for _ in range(count):
                asked.append(dict(study.ask(dists).params))
        else:
            asked = [{} for _ in range(count)]
        pool = self._minibatch_pool(ctx)
        size = min(self.minibatch_size, len(pool))

        async def score(i: int, params: dict[str, int]) -> dict[str, Any]:
            n = number + i
            picked = random.Random(f"{self.seed}:minibatch:{n}").sample(range(len(pool)), size)
            candidate = self._candidate(ctx, params, f"MIPRO trial {n}")
            result = await ctx.evaluate(candidate, [pool[j] for j in sorted(picked)])
            value = result.gate_mean() or 0.0
            return {
                "number": n,
                "params": params,
                "value": value,
                "candidate": candidate.id,
                "failed": result.n_failed,
            }

        done = await asyncio.gather(*(score(i, p) for i, p in enumerate(asked)))
        for t in done:
            self._trials.append(t)
            shown = ", ".join(f"{k}={v}" for k, v in sorted(t["params"].items())) or "defaults"
            failed = f", {t['failed']} failed" if t["failed"] else ""
            ctx.note(f"trial {t['number']}: {shown} -> {t['value']:.3f} on {size} examples{failed}")

    def _candidate(self, ctx: StepContext, params: dict[str, int], origin: str) -> Candidate:
        assert self._space is not None
        values = {}
        for key, options in self._space.items():
            name = key.split(":", 1)[1]
            values[name] = options[params.get(key, 0)]
        return ctx.current.with_values(
            values, origin=origin, details={"mipro": dict(sorted(params.items()))}
        )

    def _best_unsent(self, ctx: StepContext) -> list[Candidate]:
        """The combination with the best minibatch average not yet fully evaluated."""
        totals: dict[str, list[float]] = {}
        params_of: dict[str, dict[str, int]] = {}
        for t in self._trials:
            key = ",".join(f"{k}={v}" for k, v in sorted(t["params"].items()))
            totals.setdefault(key, []).append(t["value"])
            params_of[key] = t["params"]
        ranked = sorted(totals, key=lambda k: -sum(totals[k]) / len(totals[k]))  # stable
        for key in ranked:
            if key in self._sent:
                continue
            self._sent.append(key)
            mean = sum(totals[key]) / len(totals[key])
            ctx.note(
                f"full evaluation: {key or 'defaults'} (minibatch mean {mean:.3f} over "
                f"{len(totals[key])} trial(s))"
            )
            return [self._candidate(ctx, params_of[key], "MIPRO best of trials")]
        ctx.note("every tried combination was already fully evaluated")
        return []

    # --- state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "space": self._space,
            "trials": self._trials,
            "sent": self._sent,
            "projection": self.projection,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        space = state.get("space")
        self._space = {k: list(v) for k, v in space.items()} if space is not None else None
        self._trials = [dict(t) for t in state.get("trials", [])]
        self._sent = list(state.get("sent", []))
        self.projection = state.get("projection", "")

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "auto": self.auto,
            "num_instructions": self.num_instructions,
            "num_demo_sets": self.num_demo_sets,
            "trials": self.trials,
            "minibatch_size": self.minibatch_size,
            "full_eval_every": self.full_eval_every,
            "seed": self.seed,
            "max_bootstrapped": self.max_bootstrapped,
            "max_labeled": self.max_labeled,
            "metric_threshold": self.metric_threshold,
            "max_rounds": self.max_rounds,
            "concurrency": self.concurrency,
        }
