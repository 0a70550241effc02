"""The project file: `textgraph.toml` (or `[tool.textgraph]` in pyproject.toml).

One validated description of what to optimize, on what data, with which
engines, so `textgraph optimize / eval / compare` and a CI job all build the
same program. References such as "pkg.module:attr" are imported with the
project's directory first on sys.path. Every problem names the key.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from textgraph.errors import ConfigurationError

PROJECT_FILE = "textgraph.toml"


class ProjectError(ConfigurationError):
    """The project file is missing, not TOML, or a key has a bad value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _reference(value: str) -> str:
    where, sep, name = value.partition(":")
    if not sep or not where or not name:
        raise ValueError(f"expected 'package.module:name', got {value!r}")
    return value


class ProgramSection(_Section):
    module: str  # "pkg.module:build" -> a tg.Module
    metric: str  # "pkg.module:metric"
    loss: str | None = None  # "pkg.module:loss", for gradient optimizers

    @field_validator("module", "metric", "loss")
    @classmethod
    def _is_reference(cls, value: str | None) -> str | None:
        return value if value is None else _reference(value)


class DataSection(_Section):
    train: str | None = None
    val: str | None = None
    test: str | None = None
    loader: str | None = None  # "pkg.module:load" -> {"train": [...], "val": [...], ...}

    @field_validator("loader")
    @classmethod
    def _is_reference(cls, value: str | None) -> str | None:
        return value if value is None else _reference(value)


class EnginesSection(_Section):
    default: str  # a model string ("openai/gpt-4o-mini") or "pkg.module:make_engine"
    critic: str | None = None


class OptimizerSection(BaseModel):
    """`name` plus the optimizer's own settings (any other keys, passed as keywords)."""

    model_config = ConfigDict(extra="allow")
    name: str = "TGD"

    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainSection(_Section):
    max_steps: int = Field(default=8, ge=1)
    batch_size: int = Field(default=4, ge=1)
    gate: Literal["better", "not_worse", "always", "significant"] = "not_worse"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    seed: int = 0
    run_dir: str = "runs/latest"
    objectives: list[str] | None = None
    max_calls: int | None = Field(default=None, ge=1)  # budget
    max_cost_usd: float | None = Field(default=None, gt=0)


class Project(_Section):
    program: ProgramSection
    data: DataSection
    engines: EnginesSection
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    train: TrainSection = Field(default_factory=TrainSection)
    root: Path = Field(default=Path("."), exclude=True)

    # ---- building what the file names ----

    def resolve(self, reference: str, key: str) -> Any:
        """Import 'pkg.module:attr' from the project directory; errors name the key."""
        where, _, name = reference.partition(":")
        root = str(self.root.resolve())
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise ProjectError(
                f"{key} = {reference!r}: cannot import {where!r} from {root} ({exc})"
            ) from None
        if not hasattr(module, name):
            raise ProjectError(f"{key} = {reference!r}: module {where!r} has no {name!r}")
        return getattr(module, name)

    def path(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.root / path

    def split(self, name: str) -> list[Any]:
        """The examples of one split (train, val or test)."""
        from textgraph.datasets import load_examples

        if name not in ("train", "val", "test"):
            raise ProjectError(f"unknown split {name!r}: use train, val or test")
        file = getattr(self.data, name)
        if file is not None:
            return load_examples(self.path(file))
        if self.data.loader is not None:
            splits = _call(self.resolve(self.data.loader, "data.loader"), "data.loader")
            if not isinstance(splits, dict) or not isinstance(splits.get(name), list):
                raise ProjectError(
                    f"data.loader = {self.data.loader!r} must return a dict with a list under "
                    f"{name!r}; got {type(splits).__name__}"
                )
            return splits[name]
        raise ProjectError(f"data.{name} is not set: give a JSONL path or data.loader")

    def engine(self, which: str = "default", *, cache_salt: str | None = None) -> Any:
        """The engine of `[engines] default` or `critic`, with this cache salt (repeats)."""
        from textgraph.engines.base import is_engine
        from textgraph.engines.managed import ManagedEngine
        from textgraph.engines.registry import get_engine

        spec = getattr(self.engines, which)
        if spec is None:
            return None
        key = f"engines.{which}"
        if ":" in spec and "/" not in spec.partition(":")[0]:
            factory = self.resolve(spec, key)
            accepted = _parameters(factory)
            engine = _call(
                factory, key, **({"cache_salt": cache_salt} if "cache_salt" in accepted else {})
            )
            if not is_engine(engine):
                raise ProjectError(f"{key} = {spec!r} returned {type(engine).__name__}, no engine")
            if isinstance(engine, ManagedEngine) and "cache_salt" not in accepted:
                engine.cache_salt = cache_salt
            return engine
        return get_engine(spec, cache_salt=cache_salt)

    def build_program(self, engine: Any) -> Any:
        """Call `[program] module` (with engine= when it takes it) -> a tg.Module."""
        from textgraph.module import Module

        build = self.resolve(self.program.module, "program.module")
        module = _call(build, "program.module", **_engine_kw(build, engine))
        if not isinstance(module, Module):
            raise ProjectError(
                f"program.module = {self.program.module!r} returned {type(module).__name__}; "
                "it must return a tg.Module"
            )
        return module

    def metric(self) -> Callable[..., Any]:
        metric = self.resolve(self.program.metric, "program.metric")
        if not callable(metric):
            raise ProjectError(f"program.metric = {self.program.metric!r} is not callable")
        return metric

    def loss(self) -> Callable[..., Any] | None:
        if self.program.loss is None:
            return None
        return self.resolve(self.program.loss, "program.loss")

    def build_optimizer(self, module: Any, engine: Any, critic: Any) -> Any:
        """`[optimizer] name`: a class of tg.optim (by name) or "pkg.module:make_optimizer"."""
        from textgraph import optim

        name, settings = self.optimizer.name, self.optimizer.settings()
        if ":" in name:
            factory = self.resolve(name, "optimizer.name")
        else:
            factory = getattr(optim, name, None)
            if not (inspect.isclass(factory) and issubclass(factory, optim.Optimizer)):
                known = sorted(
                    n
                    for n in optim.__all__
                    if inspect.isclass(getattr(optim, n))
                    and issubclass(getattr(optim, n), optim.Optimizer)
                    and n != "Optimizer"
                )
                raise ProjectError(
                    f"optimizer.name = {name!r} is not an optimizer; use one of {known} or "
                    "'pkg.module:make_optimizer'"
                )
        accepted = _parameters(factory)
        args: list[Any] = []
        if "parameters" in accepted:
            args.append(module.parameters())
        if "engine" in accepted and "engine" not in settings:
            settings["engine"] = critic or engine
        if "module" in accepted:
            settings["module"] = module
        try:
            return factory(*args, **settings)
        except TypeError as exc:
            raise ProjectError(f"[optimizer] settings for {name!r}: {exc}") from None


def _parameters(function: Any) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return {}


def _engine_kw(function: Any, engine: Any) -> dict[str, Any]:
    return {"engine": engine} if "engine" in _parameters(function) else {}


def _call(function: Any, key: str, **kwargs: Any) -> Any:
    if not callable(function):
        raise ProjectError(f"{key} names {function!r}, which is not callable")
    return function(**kwargs)


def _problems(exc: ValidationError) -> str:
    out = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        out.append(f"{where}: {message}")
    return "; ".join(out)


def load_project(path: str | os.PathLike[str] | None = None) -> Project:
    """Read and validate a project file. None: ./textgraph.toml, else ./pyproject.toml's
    [tool.textgraph]. References resolve relative to the file's directory."""
    if path is None:
        candidates = [Path(PROJECT_FILE), Path("pyproject.toml")]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise ProjectError(
                f"no {PROJECT_FILE} (or pyproject.toml with [tool.textgraph]) in {Path.cwd()}; "
                "pass --config FILE"
            )
        file = found
    else:
        file = Path(path)
        if not file.is_file():
            raise ProjectError(f"no project file at {file}")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"{file} is not valid TOML: {exc}") from None
    if file.name == "pyproject.toml":
        data = data.get("tool", {}).get("textgraph")
        if data is None:
            raise ProjectError(f"{file} has no [tool.textgraph] table")
    try:
        return Project.model_validate({**data, "root": file.resolve().parent})
    except ValidationError as exc:
        raise ProjectError(f"{file}: {_problems(exc)}") from None
