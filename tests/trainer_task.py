"""A deterministic toy task for trainer tests (importable by subprocesses).

The "model" answers question i correctly when the system prompt says GOOD,
and only even questions when it says EVEN. The optimizer proposes the
candidates in CANDIDATES, one per call, in order.
"""

from __future__ import annotations

import re
import sys

import textgraph as tg
from textgraph.engines import ScriptedEngine

CANDIDATES = ["EVEN but worse: NONE", "GOOD prompt", "GOOD prompt, polished", "GOOD final"]


def answer(system: str, question: str) -> str:
    n = int(re.search(r"\d+", question).group())
    if "NONE" in system:
        return "no idea"
    if "GOOD" in system or ("EVEN" in system and n % 2 == 0):
        return str(n)
    return "no idea"


def make_engine(latency: float = 0.0, candidates: list[str] | None = None) -> ScriptedEngine:
    queue = list(candidates or CANDIDATES)

    def respond(request):
        if request.purpose in ("forward", "validation"):
            return answer(request.messages[0].content, request.messages[-1].content)
        if request.purpose == "loss":
            return "The answer should be the number in the question. " + "Details. " * 20
        if request.purpose == "backward":
            return "The system prompt should tell the model to repeat the number. " + "x " * 30
        if request.purpose == "reduce":
            return "Merged: the prompt must make the model repeat the number (examples all)."
        if request.purpose == "optimizer":
            return queue.pop(0) if queue else "GOOD final"
        raise AssertionError(request.purpose)

    return ScriptedEngine(respond, latency=latency)


class Pipeline(tg.Module):
    def __init__(self, engine):
        self.system = tg.Variable(
            "EVEN start", role_description="system prompt", requires_grad=True
        )
        self.call = tg.LLMCall(engine, self.system)

    async def aforward(self, example):
        return await self.call.acall(tg.Variable(example["question"], role_description="question"))


def exact(prediction: str, example) -> float:
    return float(prediction.strip() == example["answer"])


def data(n: int, offset: int = 0) -> list[dict[str, str]]:
    return [{"question": f"What is {i}?", "answer": str(i)} for i in range(offset, offset + n)]


def make_trainer(run_dir=None, engine=None, **options) -> tg.Trainer:
    engine = engine or make_engine()
    module = Pipeline(engine)
    loss = tg.MetricLoss(
        lambda prediction, target: float(prediction.strip() == target), engine=engine
    )
    settings = dict(
        batch_size=4,
        max_steps=4,
        seed=0,
        train=data(12),
        val=data(6, 100),
        test=data(4, 200),
        progress=False,
    )
    settings.update(options)
    return tg.Trainer(
        module,
        lambda out, ex: loss(out, ex["answer"]),
        optimizer=tg.TGD(module.parameters(), engine=engine, momentum=2),
        metric=exact,
        run_dir=run_dir,
        **settings,
    )


if __name__ == "__main__":  # python -m tests.trainer_task RUN_DIR [resume]
    trainer = make_trainer(sys.argv[1], engine=make_engine(latency=0.05))
    trainer.fit(resume=len(sys.argv) > 2)
