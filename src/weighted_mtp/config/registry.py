"""The one registry of objectives: `experiment.stage` -> objective class.

It lives in the config layer because loading a config checks the stage name, and the config
layer may not import the objectives (they sit four layers up). Each objective module registers
its class with `register_objective`; `weighted_mtp.objectives` imports every built-in one, and
every entry point (the CLI, the training loop) imports that package, so the registry is full
before any config is loaded. An objective defined elsewhere (a test, a user's module) registers
the same way and touches no package file."""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")

OBJECTIVES: dict[str, type] = {}


def register_objective(*stages: str) -> Callable[[T], T]:
    """Class decorator: `@register_objective("baseline")` makes `experiment.stage: baseline`
    run that class. A stage may be registered once."""

    def add(cls: T) -> T:
        for stage in stages:
            if stage in OBJECTIVES and OBJECTIVES[stage] is not cls:
                raise ValueError(f"objective stage '{stage}' is already registered to {OBJECTIVES[stage].__name__}")
            OBJECTIVES[stage] = cls
        return cls

    return add
