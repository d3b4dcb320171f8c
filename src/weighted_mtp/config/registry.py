"""The one registry of objectives: `experiment.stage` -> objective class, and the config
section each method owns (`clara:`, `steper:`, ...) -> its dataclass.

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
# Top-level config sections owned by objectives: every config has each one (defaults when the file
# does not set it), read as `cfg.<name>`; the root schema (`config/schema.py`) lists none of them.
SECTIONS: dict[str, type] = {}
# Stage -> the section its objective owns (a stage reads no other objective's section).
STAGE_SECTION: dict[str, str] = {}
# Dataclasses of method fields inside a root section: "training" (the critic's loss, the
# weighting), "models" (the critic, the Rho-1 reference). `config.schema.with_method_fields` adds
# them to TrainingConfig / ModelsConfig.
METHOD_FIELDS: dict[str, list[type]] = {"training": [], "models": []}


def register_objective(*stages: str, section: tuple[str, type] | None = None, training: tuple[type, ...] = (),
                       models: tuple[type, ...] = ()) -> Callable[[T], T]:
    """Class decorator: `@register_objective("baseline")` makes `experiment.stage: baseline`
    run that class; `section=("clara", ClaraSectionConfig)` adds the `clara:` config section (a
    dataclass, optionally with `validate(source)`); `training=(CriticTrainingFields,)` and
    `models=(CriticModelFields,)` add dataclasses of fields under `training:` / `models:` (a
    class several objectives use is registered by each, kept once).
    A stage or section is registered once."""

    def add(cls: T) -> T:
        for stage in stages:
            if stage in OBJECTIVES and OBJECTIVES[stage] is not cls:
                raise ValueError(f"objective stage '{stage}' is already registered to {OBJECTIVES[stage].__name__}")
            OBJECTIVES[stage] = cls
        if section is not None:
            name, config_cls = section
            if name in SECTIONS and SECTIONS[name] is not config_cls:
                raise ValueError(f"config section '{name}' is already registered to {SECTIONS[name].__name__}")
            SECTIONS[name] = config_cls
            for stage in stages:
                STAGE_SECTION[stage] = name
        for root, extra in (("training", training), ("models", models)):
            for fields in extra:
                if fields not in METHOD_FIELDS[root]:
                    METHOD_FIELDS[root].append(fields)
        return cls

    return add
