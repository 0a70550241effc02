"""Compress: a post-optimization step that shortens the prompts a run ended with.

"Optimize first, compress second." One step: every text parameter (and every
tg.Demos, demonstration-level) is compressed at each rate with a
`PerplexityCompressor`; each rate is one candidate. The loop scores them all
on the validation set (concurrently; they join the Pareto pool, so
`Trainer(select=...)` and the report see the whole trade-off), and this
optimizer chooses the most compressed one whose score is within `tolerance`
of the incumbent's; the gate accepts it with that tolerance. If no rate is
within tolerance, the incumbent stays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from textgraph.candidate import Candidate
from textgraph.demos import Demos
from textgraph.errors import ArgumentError
from textgraph.eval.result import EvalResult
from textgraph.optim.base import Optimizer
from textgraph.optim.context import StepContext
from textgraph.variable import Variable


class Compress(Optimizer):
    """`tg.optim.Compress(rates=(0.8, 0.6, 0.5, 0.33), tolerance=0.01)`.

    rates: fractions of tokens kept, one candidate each. tolerance: how far below the
    incumbent's validation score the chosen candidate may be (an absolute difference
    of means). compressor: a PerplexityCompressor (default: the embedded model's).
    parameters: the Variables to compress (default: every parameter, text and demos).
    """

    name: ClassVar[str] = "compress"
    full_validation: ClassVar[bool] = True  # choose() weighs every candidate's full scores

    def __init__(
        self,
        rates: Sequence[float] = (0.8, 0.6, 0.5, 0.33),
        tolerance: float = 0.01,
        *,
        compressor: Any = None,
        parameters: Iterable[Variable] | None = None,
    ) -> None:
        from textgraph.compression import PerplexityCompressor

        if isinstance(rates, (str, bytes)) or not isinstance(rates, Sequence) or not rates:
            raise ArgumentError(
                f"rates must be a non-empty sequence of fractions in (0, 1), got {rates!r:.60}"
            )
        for r in rates:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1:
                raise ArgumentError(
                    f"each rate must be a fraction of tokens kept, in (0, 1); got {r!r}"
                )
        if len(set(rates)) != len(rates):
            raise ArgumentError(f"rates are listed twice: {list(rates)}")
        if (
            isinstance(tolerance, bool)
            or not isinstance(tolerance, (int, float))
            or not 0 <= tolerance < 1
        ):
            raise ArgumentError(
                f"tolerance is the score a compressed candidate may lose, a number in [0, 1); "
                f"got {tolerance!r}"
            )
        if compressor is not None and not isinstance(compressor, PerplexityCompressor):
            raise ArgumentError(
                "compressor must be a textgraph.compression.PerplexityCompressor, got "
                f"{type(compressor).__name__}"
            )
        self.rates = sorted(float(r) for r in rates)  # most compressed first
        self.gate_tolerance = float(tolerance)
        self._compressor = compressor
        self.parameters = None if parameters is None else list(parameters)
        self._done: str | None = None
        self._baseline: float | None = None
        self._by_id: dict[str, dict[str, Any]] = {}  # candidate id -> rate, sizes
        self.results: list[dict[str, Any]] = []  # per rate: score, prompt tokens, chosen

    @property
    def tolerance(self) -> float:
        return self.gate_tolerance

    @property
    def compressor(self) -> Any:
        if self._compressor is None:
            from textgraph.compression import default_compressor

            self._compressor = default_compressor()
        return self._compressor

    def finished(self) -> str | None:
        return self._done

    async def propose(self, ctx: StepContext) -> list[Candidate]:
        if not ctx.val:
            raise ArgumentError(
                "tg.optim.Compress keeps a compressed prompt only within tolerance of the "
                "uncompressed score: pass val=[...] to the Trainer"
            )
        names = self._names(ctx)
        baseline = await ctx.evaluate(ctx.current, ctx.val)  # cached: the loop scored it
        self._baseline = baseline.gate_mean()
        candidates: list[Candidate] = []
        for rate in self.rates:
            changes: dict[str, Any] = {}
            sizes: dict[str, tuple[int, int]] = {}
            for name in names:
                param = ctx.parameters[name]
                if isinstance(param, Demos):
                    kept, result = await asyncio.to_thread(
                        self.compressor.compress_demos, param.items, rate=rate
                    )
                    changes[name] = [d.model_dump() for d in kept]
                else:
                    result = await asyncio.to_thread(
                        self.compressor.compress, str(ctx.current.values[name]), rate=rate
                    )
                    changes[name] = result.text
                sizes[name] = (result.original_tokens, result.compressed_tokens)
                if result.reason:
                    ctx.note(f"rate {rate:g}, {name}: {result.reason}")
            shown = ", ".join(f"{n} {a}->{b} tokens" for n, (a, b) in sizes.items())
            candidate = ctx.current.with_values(
                changes,
                origin=f"compress rate {rate:g}",
                details={"optimizer": self.name, "rate": rate, "tokens": sizes},
            )
            if candidate.id == ctx.current.id or candidate in candidates:
                ctx.note(f"rate {rate:g}: nothing changed ({shown})")
                continue
            self._by_id[candidate.id] = {"rate": rate, "tokens": sizes}
            ctx.note(f"rate {rate:g}: {shown}")
            candidates.append(candidate)
        if not candidates:
            self._done = "nothing to compress at any rate"
        return candidates

    def choose(self, validated: list[tuple[Candidate, EvalResult]]) -> Candidate | None:
        """The most compressed candidate within tolerance of the incumbent's score (None:
        the loop's default, the best score, which the gate then judges)."""
        base = self._baseline if self._baseline is not None else 0.0
        rows = []
        for candidate, result in validated:
            info = self._by_id.get(candidate.id)
            if info is None:
                continue
            score = result.gate_mean() or 0.0
            rows.append((info["rate"], score, candidate))
            self.results.append(
                {
                    "rate": info["rate"],
                    "score": score,
                    "prompt_tokens": result.objectives().get("prompt_tokens"),
                    "candidate": candidate.id,
                    "within_tolerance": score >= base - self.gate_tolerance - 1e-12,
                }
            )
        self.results.sort(key=lambda r: r["rate"])
        fitting = [r for r in rows if r[1] >= base - self.gate_tolerance - 1e-12]
        if not fitting:
            self._done = (
                f"no rate within tolerance {self.gate_tolerance:g} of the uncompressed score "
                f"{base:.3f}"
            )
            return None
        rate, score, candidate = min(fitting, key=lambda r: r[0])
        self._done = (
            f"chose rate {rate:g}: val {score:.3f} against {base:.3f} uncompressed "
            f"(tolerance {self.gate_tolerance:g})"
        )
        return candidate

    def observe(self, outcomes: list[Any]) -> None:
        if self._done is None:  # e.g. every candidate stopped on Trainer(val_subset=...)
            self._done = "no compressed candidate reached full validation"

    def _names(self, ctx: StepContext) -> list[str]:
        params = ctx.parameters
        if self.parameters is None:
            return list(params)
        names = [ctx.name_of(p) for p in self.parameters]
        return [n for n in params if n in names]

    def state_dict(self) -> dict[str, Any]:
        return {"done": self._done, "results": self.results}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._done = state.get("done")
        self.results = list(state.get("results", []))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "rates": self.rates, "tolerance": self.gate_tolerance}
