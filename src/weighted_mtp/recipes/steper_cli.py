"""`wmtp steper generate | eval | demo`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from weighted_mtp.steper.pipeline import load_or_build_retriever, load_source, run_generation, split_questions

from weighted_mtp.steper.inference import evaluate_student

from weighted_mtp.steper.config import load_generate_config

from weighted_mtp.recipes.steper_demo import run_demo

from weighted_mtp.models.load import load_causal_lm, load_tokenizer


def cmd_generate(args) -> int:
    cfg = load_generate_config(args.config, args.override)
    for split, stats in run_generation(cfg).items():
        print(f"{split}: kept {stats['kept']} of {stats['questions']} trajectories; rows {stats['rows']} "
              f"-> {Path(cfg.output_dir) / split}")
    return 0


def cmd_eval(args) -> int:
    cfg = load_generate_config(args.config, args.override)
    source = load_source(cfg)
    retriever = load_or_build_retriever(source, cfg.retriever.kind, Path(cfg.output_dir) / f"index-{cfg.retriever.kind}")
    questions = split_questions(source, args.split)[: args.limit or None]
    model_dir = Path(args.model)
    out_dir = Path(args.output_dir or model_dir / "steper_eval")
    summary, _ = evaluate_student(load_causal_lm(model_dir), load_tokenizer(model_dir), questions, retriever,
                                  k=cfg.retriever.k, max_steps=cfg.max_steps, batch_size=args.batch_size,
                                  out_path=out_dir / f"{args.split}_answers.jsonl")
    (out_dir / f"{args.split}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def add_steper_parser(sub, configs_root: Callable[[], Path]) -> None:
    def default_generate_config() -> Path:
        return configs_root() / "steper" / "generate.yaml"

    def cmd_demo(args) -> int:
        run_demo(args.output_dir, seeds=args.seeds, configs=configs_root(), train_overrides=args.override,
                 generate_overrides=args.generate_override, n_test=args.n_test)
        return 0

    st = sub.add_parser("steper", help="StepER: step-wise distillation of retrieve-and-reason trajectories")
    ss = st.add_subparsers(dest="steper_command", required=True)
    g = ss.add_parser("generate", help="teacher trajectories -> first/mid/final-step datasets (resumable)")
    g.add_argument("config", type=Path, nargs="?", default=None, help="default configs/steper/generate.yaml")
    g.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    g.set_defaults(func=lambda a: cmd_generate(_with_config(a, default_generate_config)))
    e = ss.add_parser("eval", help="a student in the interleaved loop: EM, F1, Acc, recall per step")
    e.add_argument("--model", required=True, help="an HF model directory (e.g. RUN/final)")
    e.add_argument("--config", type=Path, default=None, help="the generate config naming the data (default the embedded)")
    e.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--split", choices=["train", "valid", "test"], default="test")
    e.add_argument("--limit", type=int, default=None, metavar="N", help="first N questions only")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--output-dir", type=Path, default=None, help="default MODEL/steper_eval")
    e.set_defaults(func=lambda a: cmd_eval(_with_config(a, default_generate_config)))
    d = ss.add_parser("demo", help="StepER vs Vanilla-KD on the embedded world over several seeds")
    d.add_argument("--output-dir", type=Path, default=Path("runs/steper"))
    d.add_argument("--seeds", type=int, default=3)
    d.add_argument("--n-test", type=int, default=200, metavar="N", help="evaluate on the first N test questions (default 200)")
    d.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override applied to both arms (e.g. training.max_steps=100)")
    d.add_argument("--generate-override", action="append", default=[], metavar="KEY=VALUE",
                   help="override of configs/steper/generate.yaml (e.g. source.world.n_train=500)")
    d.set_defaults(func=cmd_demo)


def _with_config(args, default: Callable[[], Path]):
    if args.config is None:
        args.config = default()
    return args
