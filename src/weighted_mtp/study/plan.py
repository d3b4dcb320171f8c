"""What a study runs for every seed: a small DAG of training stages.

The arms of the weighting comparison are policy configs (stage baseline, verifiable, rho1). Some
read another stage's model, and the plan wires that explicitly, as `wmtp quickstart` does:

    uniform (baseline) ──► value_critic (pairwise, on its trunk) ──► critic, random_matched, shuffled
            └──────────────────────────────────────────────────► rho1 (reference: the baseline's final model)

- a verifiable arm with a separate critic and no `models.critic.path` gets the seed's value
  critic (`--critic-config`, default configs/critic/critic_pairwise.yaml, trained with
  `models.policy.path` = that seed's baseline final model);
- an arm that weights by excess loss (stage rho1, or the `combined` scheme) with no
  `models.reference.path`, training on the embedded data (so its batches carry no `ref_ce`
  column), gets the seed's baseline final model as the reference.

Seeds. A seed S sets `runtime.seed=S` (model init of any new parameters, dropout, the random
controls' weights) and `data_sampling.seed=S` (which rows, in which order) in *every* stage of
that seed, so the arms of one seed see the same data in the same order and differ only in their
token weights. The data seed varies across seeds on purpose: the micro base model is a fixed
cached build and the MTP heads start as copies of its last block, so with the runtime seed alone
the uniform arm would train bit-identically for every seed and its interval over seeds would be
empty."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from weighted_mtp.config import Config, load_config
from weighted_mtp.errors import ConfigError

# (arm name, config path under configs/): `wmtp study` with no CONFIG.
DEFAULT_ARMS = (("uniform", "baseline/baseline.yaml"), ("critic", "verifiable/verifiable_pairwise.yaml"),
                ("random_matched", "controls/random_matched.yaml"), ("shuffled", "controls/shuffled.yaml"),
                ("rho1", "rho1/rho1.yaml"))
DEFAULT_CRITIC = "critic/critic_pairwise.yaml"
CRITIC_STAGE = "value_critic"  # the run directory of the critic model (not an arm)
POLICY_STAGES = ("baseline", "verifiable", "rho1")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Stage:
    """One training run per seed. `links` are (config key, stage name): the key is set to that
    stage's `final/` directory of the same seed, so this stage runs after it."""

    name: str
    config: Path
    is_arm: bool
    links: tuple[tuple[str, str], ...] = ()

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(stage for _, stage in self.links))


@dataclass(frozen=True)
class StudyPlan:
    stages: tuple[Stage, ...]   # in an order where every stage follows the stages it needs
    baseline: str               # the arm every other arm is compared against
    overrides: tuple[str, ...] = field(default=())  # the user's, applied to every stage

    @property
    def arms(self) -> list[str]:
        return [s.name for s in self.stages if s.is_arm]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def seed_overrides(seed: int) -> list[str]:
    return [f"runtime.seed={seed}", f"data_sampling.seed={seed}"]


def stage_overrides(plan: StudyPlan, stage: Stage, seed: int, final_dirs: dict[str, Path]) -> list[str]:
    """Everything a stage's config gets on top of its file: the user's overrides, the seed, and
    the final models of the stages it needs (which must be in `final_dirs`)."""
    links = [f"{key}={final_dirs[name]}" for key, name in stage.links]
    return [*plan.overrides, *seed_overrides(seed), *links]


def parse_arm_args(args: list[str]) -> list[tuple[str | None, Path]]:
    """CONFIG or NAME=CONFIG per argument (NAME labels the arm in the report)."""
    out = []
    for text in args:
        name, sep, path = text.partition("=")
        if sep and _NAME.match(name) and not Path(text).exists():
            out.append((name, Path(path)))
        else:
            out.append((None, Path(text)))
    for _, path in out:
        if not path.is_file():
            raise ConfigError(f"wmtp study: config file not found: {path}")
    return out


def _arm_label(cfg: Config) -> str:
    if cfg.experiment.stage == "baseline":
        return "uniform"
    return cfg.training.weighting.scheme if cfg.experiment.stage == "verifiable" else cfg.experiment.stage


def _needs_reference(cfg: Config) -> bool:
    """An excess-loss arm that has neither a reference model nor a precomputed ref_ce data file."""
    uses = cfg.experiment.stage == "rho1" or cfg.training.weighting.scheme == "combined"
    return uses and cfg.models.reference.path is None and cfg.dataset.train.startswith("embedded:")


def plan_study(arm_args: list[str], configs_root: Path, *, critic_config: Path | None = None,
               overrides: list[str] | None = None) -> StudyPlan:
    """The stages of one seed. No CONFIG: the default arms. The first stage-baseline config is
    the reference arm; with none given, configs/baseline/baseline.yaml is added as `uniform`."""
    overrides = list(overrides or [])
    if arm_args:
        specs = parse_arm_args(arm_args)
    else:
        specs = [(name, configs_root / rel) for name, rel in DEFAULT_ARMS]
    loaded = []
    for name, path in specs:
        cfg = load_config(path, overrides)
        if cfg.experiment.stage not in POLICY_STAGES:
            hint = " (pass a critic config with --critic-config)" if cfg.experiment.stage == "critic" else ""
            raise ConfigError(f"{path}: experiment.stage is {cfg.experiment.stage!r}; a study arm trains the policy "
                              f"(stage {' | '.join(POLICY_STAGES)}){hint}")
        loaded.append((name, path, cfg))
    if not any(cfg.experiment.stage == "baseline" for _, _, cfg in loaded):
        path = configs_root / DEFAULT_ARMS[0][1]
        loaded.insert(0, ("uniform", path, load_config(path, overrides)))
    baseline_i = next(i for i, (_, _, cfg) in enumerate(loaded) if cfg.experiment.stage == "baseline")
    loaded.insert(0, loaded.pop(baseline_i))  # it runs first: others read its model

    labels = [name or _arm_label(cfg) for name, _, cfg in loaded]
    for i, (name, path, _) in enumerate(loaded):  # an unnamed arm whose label repeats: its file name
        if name is None and labels.count(labels[i]) > 1:
            labels[i] = path.stem
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ConfigError(f"wmtp study: two arms are named {duplicates[0]!r}; name them with NAME=CONFIG")
    if CRITIC_STAGE in labels:
        raise ConfigError(f"wmtp study: {CRITIC_STAGE!r} is the critic model's run directory; name the arm otherwise")

    baseline = labels[0]
    stages = [Stage(baseline, loaded[0][1], True)]
    critic_stage = None
    for label, (_, path, cfg) in zip(labels[1:], loaded[1:]):
        links: list[tuple[str, str]] = []
        stage = cfg.experiment.stage
        if stage == "verifiable" and cfg.training.critic_mode == "separate" and cfg.models.critic.path is None:
            if critic_stage is None:
                critic_path = critic_config or configs_root / DEFAULT_CRITIC
                critic_cfg = load_config(critic_path, overrides)
                if critic_cfg.experiment.stage != "critic":
                    raise ConfigError(f"--critic-config {critic_path}: experiment.stage is "
                                      f"{critic_cfg.experiment.stage!r}, expected 'critic'")
                critic_stage = Stage(CRITIC_STAGE, critic_path, False, (("models.policy.path", baseline),))
                stages.append(critic_stage)
            links.append(("models.critic.path", CRITIC_STAGE))
        if _needs_reference(cfg):
            links.append(("models.reference.path", baseline))
        stages.append(Stage(label, path, True, tuple(links)))
    return StudyPlan(stages=tuple(stages), baseline=baseline, overrides=tuple(overrides))


def describe(plan: StudyPlan, seeds: list[int]) -> str:
    """The plan as a reader checks it before hours of compute."""
    lines = [f"study plan: {len(plan.stages)} stages x {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
             f"arms {', '.join(plan.arms)}; each compared with {plan.baseline!r}"]
    for s in plan.stages:
        deps = "".join(f"; {key} <- {name}/final" for key, name in s.links)
        lines.append(f"  {s.name:<16} {'arm' if s.is_arm else 'model':<6} {s.config}{deps}")
    lines.append(f"  every stage of seed S: {' '.join(seed_overrides(0)).replace('=0', '=S')}"
                 + (f"; overrides: {' '.join(plan.overrides)}" if plan.overrides else ""))
    return "\n".join(lines)
