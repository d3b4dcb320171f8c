"""`wmtp study CONFIG... --seeds 0,1,2 [--output-dir DIR]`: the comparison of weighting arms."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from weighted_mtp.errors import ConfigError
from weighted_mtp.study.evaluation import StudyEvalSettings
from weighted_mtp.study.plan import describe, plan_study
from weighted_mtp.study.report import answer_lines
from weighted_mtp.study.run import run_study
from weighted_mtp.study.runner import StudyInterrupted


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise ConfigError(f"{option} takes comma-separated non-negative integers, got {text!r}")
    return values


def _floats(text: str, option: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} takes comma-separated numbers, got {text!r}")
    return values


def cmd_study(args, configs_root: Path) -> int:
    seeds = _ints(args.seeds, "--seeds")
    plan = plan_study(args.configs, configs_root, critic_config=args.critic_config, overrides=args.override)
    if args.dry_run:
        print(describe(plan, seeds))
        return 0
    settings = StudyEvalSettings(
        benchmark=args.benchmark, n=args.n, ks=tuple(_ints(args.k, "--k")),
        temperatures=tuple(_floats(args.temperatures, "--temperatures")),
        temperature=None if args.temperature is None else _floats(args.temperature, "--temperature")[0],
        limit=args.limit, select_limit=args.select_limit or None, select_n=args.select_n,
        max_new_tokens=args.max_new_tokens, workers=args.workers, timeout_s=args.timeout,
        batch_size=args.batch_size, greedy=not args.no_greedy, sampled=not args.no_sampled)
    try:
        result = run_study(plan, seeds, args.output_dir, settings, evaluate=not args.no_eval,
                           command="wmtp " + " ".join(sys.argv[1:]), n_boot=args.n_boot)
    except StudyInterrupted as e:
        print(str(e))
        return 0

    print()
    for line in answer_lines(result.analysis) or ["no comparison (nothing evaluated)"]:
        print(line)
    print(f"trained {len(result.trained)} stage runs, evaluated {len(result.evaluated)} steps in this call")
    print(f"report: {result.report_md}\n        {result.report_json}")
    return 0


def add_study_parser(sub, configs_root: Callable[[], Path]) -> None:
    s = sub.add_parser(
        "study", help="train every arm for every seed (resumable), evaluate pass@k, report paired differences",
        description="Trains each arm config (default: uniform, critic, random_matched, shuffled, rho1) for "
                    "every seed, with the stages they need (a value critic on the baseline's trunk; the "
                    "baseline as rho1's reference); evaluates greedy pass@1 and sampled pass@k at a "
                    "temperature chosen on the validation split; writes report/study.{md,html,json} with "
                    "per-arm intervals over seeds and paired differences against the baseline. Run the same "
                    "command again to continue: finished runs and evaluations are skipped.")
    s.add_argument("configs", nargs="*", metavar="CONFIG",
                   help="arm configs, optionally NAME=CONFIG (default: the five default arms)")
    s.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (runtime.seed and data_sampling.seed)")
    s.add_argument("--output-dir", type=Path, default=Path("runs/study"))
    s.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="applied to every stage")
    s.add_argument("--critic-config", type=Path, default=None,
                   help="the value critic's config (default configs/critic/critic_pairwise.yaml)")
    s.add_argument("--dry-run", action="store_true", help="print the plan (stages, links, seeds) and stop")
    s.add_argument("--benchmark", choices=["embedded", "humaneval"], default="embedded")
    s.add_argument("--n", type=int, default=10, help="samples per task for sampled pass@k (default 10)")
    s.add_argument("--k", default="1,5,10", help="comma-separated k (default 1,5,10)")
    s.add_argument("--temperatures", default="0.2,0.6,1.0",
                   help="candidates; each run's sampling temperature is chosen on the embedded validation split")
    s.add_argument("--temperature", default=None, help="a fixed sampling temperature instead (no selection)")
    s.add_argument("--limit", type=int, default=None, metavar="N", help="first N test tasks (reported as a subset)")
    s.add_argument("--select-limit", type=int, default=50, metavar="N",
                   help="validation tasks for the temperature choice (default 50; 0: all)")
    s.add_argument("--select-n", type=int, default=None, help="samples per validation task (default --n)")
    s.add_argument("--max-new-tokens", type=int, default=256)
    s.add_argument("--batch-size", type=int, default=16, help="prompts generated at once")
    s.add_argument("--workers", type=int, default=2, help="programs run at once in the sandbox")
    s.add_argument("--timeout", type=float, default=5.0, metavar="S", help="CPU seconds per program")
    s.add_argument("--no-greedy", action="store_true", help="skip greedy pass@1")
    s.add_argument("--no-sampled", action="store_true", help="skip sampled pass@k (and the temperature choice)")
    s.add_argument("--no-eval", action="store_true", help="train only")
    s.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    s.set_defaults(func=lambda a: cmd_study(a, configs_root()))
