"""`wmtp clara demo | eval-pdf | validate-data`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from weighted_mtp.recipes.clara_demo import run_demo

from weighted_mtp.recipes.clara_build import default_model_dir, ensure_default_model

from weighted_mtp.clara.eval_pdf import check_model_dir, evaluate_pdf, load_eval_pdf_config, prepare_pdf

from weighted_mtp.clara.data import validate_file


def add_clara_parser(sub, configs_root: Callable[[], Path]) -> None:
    def cmd_demo(args) -> int:
        run_demo(args.output_dir, configs_root(), overrides=args.override, pdf_overrides=args.pdf_override)
        return 0

    def cmd_eval_pdf(args) -> int:
        import time

        overrides = list(args.override)
        if args.qa is not None:
            overrides += ["qa.source=file", f"qa.file={args.qa}"]
        if args.base is not None:
            overrides.append(f"base={args.base}")
        # Fail fast: the config, the given models and the PDF with its questions are all checked
        # before any model is built, trained or loaded.
        cfg = load_eval_pdf_config(args.config or configs_root() / "clara" / "eval_pdf.yaml", overrides)
        model = check_model_dir(args.model) if args.model else None
        compression = check_model_dir(args.compression_model, "--compression-model") if args.compression_model else None
        pdf = Path(args.pdf)
        out = Path(args.output_dir or pdf.with_suffix("").name + "-clara-eval")
        prep = prepare_pdf(pdf, out, cfg)
        print(f"{pdf}: {len(prep.pages)} pages, {len(prep.chunks)} chunks, {len(prep.pairs)} QA pairs "
              f"({cfg.qa.source}) written to {prep.qa_file}")
        extra = {}
        if model is None:
            cached = (default_model_dir(configs_root(), cfg.base, cfg.world_seed) / "clara_config.json").is_file()
            start = time.perf_counter()
            model = ensure_default_model(configs_root(), cfg.world_seed, base=cfg.base)
            extra["default_model"] = {"base": cfg.base, "cached": cached,
                                      "build_seconds": round(time.perf_counter() - start, 1)}
            if compression is None and (model / "stage1").is_dir():
                compression = model / "stage1"  # the default keeps its stage-1 model for this
        summary = evaluate_pdf(prep, model, out, cfg, compression_model_dir=compression, extra=extra)
        for name, m in summary["scenarios"].items():
            print(f"{name:<16} EM {m['em']:.3f}  F1 {m['f1']:.3f}  cover-EM {m['cover_em']:.3f}  "
                  f"keywords {m['keyword_overlap']:.3f}" + (f"  Recall@1 {m['recall@1']:.3f}" if "recall@1" in m else ""))
        c = summary["compression"]
        print(f"compression      reconstruction F1 {c['reconstruction_f1']:.3f}  "
              f"{c.get('compression_ratio', float('nan')):.1f}x ({c['memory_tokens']} memory vectors per chunk)")
        print(f"report: {out / 'report.md'}")
        return 0

    def cmd_validate(args) -> int:
        print(validate_file(args.file, args.stage))
        return 0

    c = sub.add_parser("clara", help="CLaRa: compressed-document RAG in three stages, evaluation on any PDF")
    cs = c.add_subparsers(dest="clara_command", required=True)
    d = cs.add_parser("demo", help="the three stages, the frozen-reasoner control and a PDF evaluation, embedded")
    d.add_argument("--output-dir", type=Path, default=Path("runs/clara"))
    d.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override for every stage (e.g. training.max_steps=50)")
    d.add_argument("--pdf-override", action="append", default=[], metavar="KEY=VALUE",
                   help="override of configs/clara/eval_pdf.yaml")
    d.set_defaults(func=cmd_demo)
    e = cs.add_parser("eval-pdf", help="evaluate a CLaRa model on a PDF (default: the embedded model)")
    e.add_argument("pdf", metavar="FILE.pdf")
    e.add_argument("--model", default=None,
                   help="a CLaRa model directory (RUN/final); default: the cached default model of --base, "
                        "built once (resumes if interrupted)")
    e.add_argument("--base", default=None, choices=["micro", "smollm2"],
                   help="the default model's base when no --model is given (default: the config's 'base')")
    e.add_argument("--qa", default=None, metavar="QA.jsonl",
                   help="your own QA pairs, one {question, answer, chunk_id?, keywords?} per line (e.g. an "
                        "edited qa_pairs.jsonl of an earlier run); default: questions generated from the text")
    e.add_argument("--compression-model", default=None,
                   help="the model whose chunk reconstructions measure compression quality (a stage-1 RUN/final: "
                        "later stages answer and no longer paraphrase); default: --model, or the embedded stage 1")
    e.add_argument("--output-dir", default=None, help="default ./<FILE>-clara-eval")
    e.add_argument("--config", type=Path, default=None, help="default configs/clara/eval_pdf.yaml")
    e.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    e.set_defaults(func=cmd_eval_pdf)
    v = cs.add_parser("validate-data", help="check a CLaRa data file (ml-clara JSONL) for one stage")
    v.add_argument("file", type=Path)
    v.add_argument("--stage", type=int, required=True, choices=[1, 2, 3])
    v.set_defaults(func=cmd_validate)
