"""ParetoTGD: GEPA-style Pareto search whose reflection is textgraph's textual gradients.

A pool of candidates, each scored on every validation example. Per step:

1. Parent: for each validation example the candidates with its best score
   lead it; candidates whose every lead is shared with a stronger one are
   dropped (dominated); a parent is drawn with probability proportional to
   how many examples it leads. A candidate that wins only some examples
   stays in play, where a mean-only search would discard it.
2. Reflection: on a training minibatch (epoch-shuffled) the parent runs
   forward, loss and backward — the textual gradients, which use the
   metric's `tg.Score.feedback` when it gives one — and TGD rewrites one text
   parameter (round-robin).
3. The child is scored on the same minibatch; only if it beats the parent
   there is it proposed, and the loop scores it on the full validation set,
   gates it against the incumbent and records it. Whatever the gate says, a
   fully validated child joins the pool.
4. merge=True: after a step that added to the pool, two pool candidates that
   lead different examples and share an ancestor are combined (each
   parameter from the side that changed it); the merge is proposed when it
   scores at least as well as both on validation examples where they differ.

Budget: `max_metric_calls` counts every (candidate, example) scoring — the
initial validation, minibatches, full validations, merge checks — and a
step starts only when its worst case fits, so the count never exceeds the
limit. Token and cost limits are the Trainer's `tg.Budget`.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

from textgraph._checks import check_int, check_number, check_optional_int
from textgraph.candidate import Candidate, candidate_values
from textgraph.engines.base import Engine
from textgraph.engines.context import check_engine
from textgraph.errors import ArgumentError, StateDictError
from textgraph.ops.llm import sampling_parameters
from textgraph.optim.base import CandidateOutcome, Optimizer
from textgraph.optim.context import StepContext
from textgraph.optim.demos import ops_of
from textgraph.optim.filters import copied_example
from textgraph.optim.tgd import TGD, _text_list


class ParetoTGD(Optimizer):
    """`ParetoTGD(minibatch_size=3, max_metric_calls=None, merge=False, seed=0)`.

    engine: the model that rewrites (default: the Trainer's critic_engine, then the
    default engine). max_merges: merges tried at most. reject_copies: drop a child whose
    new text contains a training example (20+ characters), before it costs a minibatch.
    perfect: a minibatch where the parent scores at least this everywhere teaches
    nothing and is skipped. constraints / max_tokens: passed to the TGD rewrite.
    Without a Trainer loss_fn, the loss is `tg.example_metric_loss(metric)`.
    """

    requires_gradients: ClassVar[bool] = True
    default_loss_from_metric: ClassVar[bool] = True
    name: ClassVar[str] = "pareto_tgd"
    full_validation: ClassVar[bool] = True  # every validated child joins its pool

    def __init__(
        self,
        minibatch_size: int = 3,
        max_metric_calls: int | None = None,
        merge: bool = False,
        seed: int = 0,
        *,
        engine: Engine | str | None = None,
        max_merges: int = 5,
        reject_copies: bool = True,
        perfect: float = 1.0,
        constraints: Sequence[str] | None = None,
        max_tokens: int | None = None,
        verbose: bool = True,
    ) -> None:
        check_int("minibatch_size", minibatch_size, minimum=1)
        check_optional_int(
            "max_metric_calls", max_metric_calls, minimum=1, none_means="no metric-call budget"
        )
        if not isinstance(merge, bool):
            raise ArgumentError(f"merge must be True or False, got {merge!r}")
        check_int("seed", seed, minimum=None)
        check_int("max_merges", max_merges, minimum=0)
        check_number(
            "perfect",
            perfect,
            positive=True,
            instead="the score at which a minibatch needs no change",
        )
        engine = check_engine(engine, "ParetoTGD(engine)")
        self.minibatch_size, self.max_metric_calls = minibatch_size, max_metric_calls
        self.merge, self.seed, self.max_merges = merge, seed, max_merges
        self.engine, self.reject_copies, self.perfect = engine, reject_copies, float(perfect)
        self.constraints = _text_list(constraints, "constraints")
        sampling_parameters("ParetoTGD", max_tokens=max_tokens)  # fail here, not mid-run
        self.max_tokens, self.verbose = max_tokens, verbose
        self._tgd: TGD | None = None
        self._tgd_steps = 0
        self._pool: list[dict[str, Any]] = []  # id, values, parents, origin, step, scores
        self._pending: dict[str, dict[str, Any]] = {}  # proposed, awaiting full validation
        self.metric_calls = 0
        self._iteration = 0
        self._param_turn = 0
        self._cursor = 0  # position in the epoch-shuffled training order
        self._merge_due = False
        self._merges = 0
        self._tried_merges: list[str] = []
        self._finished: str | None = None
        self._log: list[str] = []  # what observe learned, noted in the next step
        self.projection = ""

    # --- the loop's view ----------------------------------------------------------

    def finished(self) -> str | None:
        # Decided before a step when possible, so the run does not record an empty one.
        if self._finished is None and self._pool:
            self._finished = self._out_of_budget(len(self._pool[0]["scores"])) or self._solved()
        return self._finished

    @property
    def pool(self) -> list[dict[str, Any]]:
        """Every fully validated candidate: id, values, parents, origin, step, and its
        score on each validation example (failed examples as 0)."""
        return [dict(e, scores=list(e["scores"])) for e in self._pool]

    async def propose(self, ctx: StepContext) -> list[Candidate]:
        if not ctx.val:
            raise ArgumentError(
                "ParetoTGD keeps the candidates that lead on each validation example: pass "
                "val=[...] to the Trainer"
            )
        texts = ctx.text_parameters("ParetoTGD")
        if self._tgd is None:
            self._tgd = TGD(
                [ctx.parameters[n] for n in texts],
                self.engine or ctx.critic_engine or ctx.engine,
                constraints=self.constraints,
                max_tokens=self.max_tokens,
            )
            self._tgd.steps_taken = self._tgd_steps
        if not self._pool:
            await self._start(ctx, texts)
        for line in self._log:
            ctx.note(line)
        self._log = []
        why = self._out_of_budget(len(ctx.val)) or self._solved()
        if why:
            self._finished = why
            ctx.note(why)
            return []
        self._iteration += 1
        if self.merge and self._merge_due and self._merges < self.max_merges:
            self._merge_due = False
            merged = await self._try_merge(ctx)
            if merged is not None:
                return [merged]
        return await self._reflect(ctx, texts)

    # --- setup ---------------------------------------------------------------------

    async def _start(self, ctx: StepContext, texts: list[str]) -> None:
        seed = await ctx.evaluate(ctx.current, ctx.val)  # the loop's initial validation
        self.metric_calls += len(ctx.val)
        self._pool.append(
            {
                "id": ctx.current.id,
                "values": dict(ctx.current.values),
                "parents": [],
                "origin": "initial",
                "step": 0,
                "scores": _scores(seed.scores),
            }
        )
        llm_ops = max(1, sum(1 for op in ops_of(ctx.module) if op.calls_llm))
        self.projection = self._project(len(ctx.val), llm_ops, len(texts))
        ctx.note(self.projection)
        if self.verbose:
            print(self.projection, file=sys.stderr)

    def _project(self, n_val: int, llm_ops: int, n_texts: int) -> str:
        mb = self.minibatch_size
        lines = [
            f"ParetoTGD: each step scores a minibatch of {mb} twice (parent, child): {2 * mb} "
            f"metric calls, {n_val} more when the child is promoted to full validation; LLM "
            f"calls per step about {mb * llm_ops} forward + up to {mb * llm_ops} backward + 1 "
            f"rewrite + {mb * llm_ops} child forward (+ {n_val * llm_ops} on promotion); "
            f"{n_texts} text parameter(s), one rewritten per step"
        ]
        if self.max_metric_calls is not None:
            left = max(0, self.max_metric_calls - n_val)
            most = left // (2 * mb)
            fewest = left // (2 * mb + n_val)
            lines.append(
                f"budget {self.max_metric_calls} metric calls ({n_val} spent on the initial "
                f"validation): between {fewest} steps (every child promoted) and {most} "
                "(none promoted); set the Trainer's max_steps at least that high"
            )
        return "; ".join(lines)

    def _out_of_budget(self, n_val: int) -> str | None:
        if self.max_metric_calls is None:
            return None
        worst = 2 * self.minibatch_size + n_val  # parent and child minibatches, promotion
        if self.metric_calls + worst > self.max_metric_calls:
            return (
                f"metric-call budget: {self.metric_calls} of {self.max_metric_calls} used; a "
                f"step may need {worst} more"
            )
        return None

    def _solved(self) -> str | None:
        for entry in self._pool:
            if all(s >= self.perfect for s in entry["scores"]):
                return f"{entry['id']} is perfect on every validation example"
        return None

    # --- reflection ----------------------------------------------------------------

    async def _reflect(self, ctx: StepContext, texts: list[str]) -> list[Candidate]:
        assert self._tgd is not None
        parent_entry = self._select_parent()
        parent = Candidate(parent_entry["values"], origin=parent_entry["origin"])
        name = texts[self._param_turn % len(texts)]
        self._param_turn += 1
        indices = self._minibatch(len(ctx.train))
        ctx.note(
            f"parent {parent.id} (leads {self._leads().get(parent.id, 0)} of {len(ctx.val)} "
            f"validation examples); minibatch {indices}; rewriting {name}"
        )
        await ctx.gradients(indices, candidate=parent)
        self.metric_calls += len(indices)
        parent_scores = _scores(ctx.train_scores)
        if all(s >= self.perfect for s in parent_scores):
            ctx.note(f"the parent is perfect on the minibatch ({parent_scores}): nothing to learn")
            return []
        param = ctx.parameters[name]
        if not param.gradients:
            ctx.note(f"{name} received no critique on this minibatch: nothing to rewrite")
            return []
        critique = param.grad
        with candidate_values(ctx.module, parent):
            update = await self._tgd.rewrite(param)
        self._tgd_steps = self._tgd.steps_taken
        if update.warning:
            ctx.note(f"{name}: {update.warning}")
            return []
        if not update.changed:
            ctx.note(f"{name}: the rewrite returned the parent's value unchanged")
            return []
        child = Candidate(
            {**parent.values, name: update.new_value},
            parents=(parent.id,),
            origin=f"pareto_tgd step {ctx.step}: {name} of {parent.id}",
            details={
                "optimizer": self.name,
                "parent": parent.id,
                "parameter": name,
                "minibatch": indices,
                "critique": critique[:4000],
            },
        )
        if any(e["id"] == child.id for e in self._pool):
            ctx.note(f"child {child.id} is already in the pool")
            return []
        kept, reasons = ctx.filter(child, parent)
        if kept is None or kept.id != child.id:
            ctx.note(f"child {child.id} filtered: " + "; ".join(reasons))
            return []
        if self.reject_copies and (i := copied_example(update.new_value, ctx.train)) is not None:
            ctx.note(f"child {child.id} rejected: {name} copies training example {i}")
            return []
        result = await ctx.evaluate(child, [ctx.train[i] for i in indices])
        self.metric_calls += len(result.evaluated)
        child_scores = _scores(result.scores)
        before, after = sum(parent_scores), sum(child_scores)
        verdict = "proposed for full validation" if after > before else "discarded"
        ctx.note(f"child {child.id} on the minibatch: {before:g} -> {after:g}: {verdict}")
        if after <= before:
            return []
        details = dict(child.details, parent_minibatch=parent_scores, child_minibatch=child_scores)
        child = Candidate(child.values, parents=child.parents, origin=child.origin, details=details)
        self._pending[child.id] = {"parents": [parent.id], "origin": child.origin, "step": ctx.step}
        return [child]

    def _minibatch(self, n: int) -> list[int]:
        """The next `minibatch_size` positions of an epoch-shuffled order of train (GEPA's
        sampler): every example is used once per epoch."""
        size = min(self.minibatch_size, n)
        out = []
        while len(out) < size:
            epoch, k = divmod(self._cursor, n)
            order = list(range(n))
            random.Random(f"{self.seed}:epoch:{epoch}").shuffle(order)
            if order[k] not in out:
                out.append(order[k])
            self._cursor += 1
        return out

    # --- the per-example Pareto front ---------------------------------------------------

    def _leaders(self) -> list[set[int]]:
        """For each validation example, the pool positions with its best score."""
        n = len(self._pool[0]["scores"])
        out = []
        for i in range(n):
            best = max(e["scores"][i] for e in self._pool)
            out.append({k for k, e in enumerate(self._pool) if e["scores"][i] == best})
        return out

    def _alive(self, leaders: list[set[int]]) -> list[int]:
        """Pool positions that lead some example and are not dominated: a candidate is
        dropped (weakest first) when every example it leads is also led by another one
        still in play."""
        alive = {k for lead in leaders for k in lead}

        def mean(k: int) -> float:
            scores = self._pool[k]["scores"]
            return sum(scores) / len(scores)

        for k in sorted(alive, key=lambda k: (mean(k), k)):
            fronts = [lead for lead in leaders if k in lead]
            if all(any(q != k and q in alive for q in lead) for lead in fronts):
                alive.discard(k)
        return sorted(alive)

    def _leads(self) -> dict[str, int]:
        leaders = self._leaders()
        alive = set(self._alive(leaders))
        counts = Counter(k for lead in leaders for k in lead if k in alive)
        return {self._pool[k]["id"]: counts[k] for k in sorted(counts)}

    def _select_parent(self) -> dict[str, Any]:
        leaders = self._leaders()
        alive = self._alive(leaders)
        counts = Counter(k for lead in leaders for k in lead if k in alive)
        rng = random.Random(f"{self.seed}:parent:{self._iteration}")
        (k,) = rng.choices(alive, weights=[counts[k] for k in alive])
        return self._pool[k]

    # --- merge -----------------------------------------------------------------------

    def _ancestors(self, k: int) -> list[int]:
        """Pool positions of k's ancestors, nearest first."""
        position = {e["id"]: i for i, e in enumerate(self._pool)}
        out: list[int] = []
        todo = [position[p] for p in self._pool[k]["parents"] if p in position]
        while todo:
            a = todo.pop(0)
            if a in out:
                continue
            out.append(a)
            todo += [position[p] for p in self._pool[a]["parents"] if p in position]
        return out

    def _merge_options(self) -> list[tuple[int, int, int, dict[str, Any], dict[str, str]]]:
        options = []
        alive = self._alive(self._leaders())
        ids = {e["id"] for e in self._pool}
        for x, a in enumerate(alive):
            for b in alive[x + 1 :]:
                key = f"{self._pool[a]['id']}+{self._pool[b]['id']}"
                up_a, up_b = self._ancestors(a), self._ancestors(b)
                if key in self._tried_merges or a in up_b or b in up_a:
                    continue
                common = [c for c in up_a if c in up_b]
                if not common:
                    continue
                c = max(common)  # the most recent shared ancestor
                values, source = self._combine(a, b, c)
                if values is None or Candidate(values).id in ids:
                    continue
                options.append((a, b, c, values, source))
        return options

    def _combine(self, a: int, b: int, c: int) -> tuple[dict[str, Any] | None, dict[str, str]]:
        va, vb, vc = (self._pool[k]["values"] for k in (a, b, c))
        mean_a = sum(self._pool[a]["scores"])
        mean_b = sum(self._pool[b]["scores"])
        values, source = {}, {}
        for name, ancestral in vc.items():
            changed_a, changed_b = va[name] != ancestral, vb[name] != ancestral
            if changed_a and not changed_b:
                values[name], source[name] = va[name], "a"
            elif changed_b and not changed_a:
                values[name], source[name] = vb[name], "b"
            elif changed_a and changed_b:  # both rewrote it: the stronger side's
                side = "a" if mean_a >= mean_b else "b"
                values[name], source[name] = (va if side == "a" else vb)[name], side
            else:
                values[name], source[name] = ancestral, "ancestor"
        if "a" not in source.values() or "b" not in source.values():
            return None, source  # nothing to combine: one side's changes would be lost
        return values, source

    async def _try_merge(self, ctx: StepContext) -> Candidate | None:
        options = self._merge_options()
        if not options:
            ctx.note("merge: no two non-dominated candidates with a shared ancestor to combine")
            return None
        rng = random.Random(f"{self.seed}:merge:{self._iteration}")
        a, b, c, values, source = rng.choice(options)
        ea, eb = self._pool[a], self._pool[b]
        self._tried_merges.append(f"{ea['id']}+{eb['id']}")
        self._merges += 1
        # validation examples where they differ, half where each side wins
        pairs = list(enumerate(zip(ea["scores"], eb["scores"], strict=True)))
        wins_a = [i for i, (x, y) in pairs if x > y]
        wins_b = [i for i, (x, y) in pairs if y > x]
        rest = [i for i in range(len(ctx.val)) if i not in wins_a and i not in wins_b]
        k = min(max(2, self.minibatch_size), len(ctx.val))
        picked = rng.sample(wins_a, min(len(wins_a), (k + 1) // 2))
        picked += rng.sample(wins_b, min(len(wins_b), k - len(picked)))
        picked += rng.sample(rest, min(len(rest), k - len(picked)))
        picked.sort()
        merged = Candidate(
            values,
            parents=(ea["id"], eb["id"]),
            origin=f"pareto_tgd merge of {ea['id']} and {eb['id']}",
            details={
                "optimizer": self.name,
                "merge": [ea["id"], eb["id"]],
                "ancestor": self._pool[c]["id"],
                "from": source,
            },
        )
        result = await ctx.evaluate(merged, [ctx.val[i] for i in picked])
        self.metric_calls += len(result.evaluated)
        got = sum(_scores(result.scores))
        need = max(sum(ea["scores"][i] for i in picked), sum(eb["scores"][i] for i in picked))
        verdict = "proposed for full validation" if got >= need else "discarded"
        ctx.note(
            f"merge of {ea['id']} and {eb['id']} (ancestor {self._pool[c]['id']}): {got:g} on "
            f"validation examples {picked} where the better of the two had {need:g}: {verdict}"
        )
        if got < need:
            return None
        self._pending[merged.id] = {
            "parents": [ea["id"], eb["id"]],
            "origin": merged.origin,
            "step": ctx.step,
        }
        return merged

    # --- learning from the loop ----------------------------------------------------------

    def observe(self, outcomes: list[CandidateOutcome]) -> None:
        for outcome in outcomes:
            pending = self._pending.pop(outcome.candidate.id, None)
            if pending is None:
                continue
            result = outcome.result
            if result is None:
                self._log.append(
                    f"{outcome.candidate.id} was not validated ({outcome.status}: "
                    f"{outcome.reason}); not added to the pool"
                )
                continue
            self.metric_calls += len(result.evaluated)
            n_val = len(self._pool[0]["scores"])
            if result.n != n_val:
                self._log.append(
                    f"{outcome.candidate.id} was scored on {result.n} of {n_val} validation "
                    "examples (the Trainer's val_subset); not added to the pool"
                )
                continue
            self._pool.append(
                {
                    "id": outcome.candidate.id,
                    "values": dict(outcome.candidate.values),
                    "parents": pending["parents"],
                    "origin": pending["origin"],
                    "step": pending["step"],
                    "scores": _scores(result.scores),
                }
            )
            self._merge_due = True
            self._log.append(
                f"{outcome.candidate.id} joined the pool ({outcome.status} by the gate; "
                f"val {result.gate_mean():.3f}); pool size {len(self._pool)}"
            )

    # --- state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "pool": self._pool,
            "pending": self._pending,
            "metric_calls": self.metric_calls,
            "iteration": self._iteration,
            "param_turn": self._param_turn,
            "cursor": self._cursor,
            "merge_due": self._merge_due,
            "merges": self._merges,
            "tried_merges": self._tried_merges,
            "finished": self._finished,
            "log": self._log,
            "tgd_steps": self._tgd_steps,
            "projection": self.projection,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            pool = [
                {
                    "id": str(e["id"]),
                    "values": dict(e["values"]),
                    "parents": [str(p) for p in e["parents"]],
                    "origin": str(e["origin"]),
                    "step": int(e["step"]),
                    "scores": [float(s) for s in e["scores"]],
                }
                for e in state["pool"]
            ]
            ints = {
                k: int(state[k])
                for k in ("metric_calls", "iteration", "param_turn", "cursor", "merges")
            }
            pending = {str(k): dict(v) for k, v in state["pending"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateDictError(f"ParetoTGD state is malformed: {exc!r}") from None
        self._pool, self._pending = pool, pending
        self.metric_calls, self._iteration = ints["metric_calls"], ints["iteration"]
        self._param_turn, self._cursor, self._merges = (
            ints["param_turn"],
            ints["cursor"],
            ints["merges"],
        )
        self._merge_due = bool(state.get("merge_due", False))
        self._tried_merges = [str(k) for k in state.get("tried_merges", [])]
        self._finished = state.get("finished")
        self._log = [str(line) for line in state.get("log", [])]
        self._tgd_steps = int(state.get("tgd_steps", 0))
        self.projection = str(state.get("projection", ""))
        if self._tgd is not None:
            self._tgd.steps_taken = self._tgd_steps

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "minibatch_size": self.minibatch_size,
            "max_metric_calls": self.max_metric_calls,
            "merge": self.merge,
            "seed": self.seed,
            "max_merges": self.max_merges,
            "reject_copies": self.reject_copies,
            "perfect": self.perfect,
            "constraints": self.constraints,
        }


def _scores(scores: Sequence[float | None]) -> list[float]:
    """Per-example scores with failures as 0 (what gates and fronts compare)."""
    return [0.0 if s is None else float(s) for s in scores]
