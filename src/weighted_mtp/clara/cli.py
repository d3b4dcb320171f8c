"""`wmtp clara demo | eval-pdf | validate-data`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def add_clara_parser(sub, configs_root: Callable[[], Path]) -> None:
    def cmd_demo(args) -> int:
        from weighted_mtp.clara.demo import run_demo

        run_demo(args.output_dir, configs_root(), overrides=args.override, pdf_overrides=args.pdf_override)
        return 0

    def cmd_eval_pdf(args) -> int:
        from weighted_mtp.clara.demo import ensure_default_model
        from weighted_mtp.clara.eval_pdf import eval_pdf, load_eval_pdf_config

        cfg = load_eval_pdf_config(args.config or configs_root() / "clara" / "eval_pdf.yaml", args.override)
        pdf = Path(args.pdf)
        from weighted_mtp.clara.pdf import extract_text

        extract_text(pdf)  # an unreadable or text-less PDF fails before any model is trained or loaded
        model = Path(args.model) if args.model else ensure_default_model(configs_root(), cfg.world_seed)
        compression = args.compression_model
        if compression is None and not args.model and (model / "stage1").is_dir():
            compression = model / "stage1"  # the embedded default keeps its stage-1 model for this
        out = Path(args.output_dir or pdf.with_suffix("").name + "-clara-eval")
        summary = eval_pdf(pdf, model, out, cfg, compression_model_dir=compression)
        for name, m in summary["scenarios"].items():
            print(f"{name:<16} EM {m['em']:.3f}  F1 {m['f1']:.3f}  cover-EM {m['cover_em']:.3f}  "
                  f"keywords {m['keyword_overlap']:.3f}" + (f"  Recall@1 {m['recall@1']:.3f}" if "recall@1" in m else ""))
        print(f"report: {out / 'report.md'}")
        return 0

    def cmd_validate(args) -> int:
        from weighted_mtp.clara.data import validate_file

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
    e.add_argument("--model", default=None, help="a CLaRa model directory (RUN/final); default: the embedded one")
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
