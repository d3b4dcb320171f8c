"""`wmtp clara demo`: CLaRa's three stages on the embedded world through the one training loop,
the frozen-reasoner control, Recall@1 before and after stage 3 on held-out questions, and the
PDF evaluation on two PDFs rendered from the embedded world: its held-out (test) documents and
the documents it trained on, which tells a harness problem from a model that does not generalise.
Writes summary.json.
Finished stages are reused and an interrupted stage resumes from its checkpoint (recipes/clara_build.py)."""

from __future__ import annotations

import json
from pathlib import Path

from weighted_mtp.clara.data import read_stage
from weighted_mtp.clara.eval_pdf import eval_pdf, load_eval_pdf_config
from weighted_mtp.clara.evaluate import stage3_recall
from weighted_mtp.clara.model import ClaraModel
from weighted_mtp.clara.pdf import render_pdf
from weighted_mtp.clara.resources import embedded_clara_dir
from weighted_mtp.config import load_config
from weighted_mtp.rag.passages import read_passages
from weighted_mtp.recipes.clara_build import train_stages


def recall_before_after(out: Path, configs: Path, overrides: list[str], n_questions: int = 300) -> dict:
    """Recall@1/3 of the query reasoner over each question's candidates: initialised from the
    stage-2 compressor (before), after stage 3, and after the frozen-reasoner control; on the
    stage-3 training questions (documents the compressor learned in stages 1-2) and on held-out
    test questions (documents no stage has seen)."""
    cfg = load_config(configs / "clara" / "stage3.yaml", overrides)
    data = embedded_clara_dir(cfg.clara.world_seed, cfg.clara.train_docs, cfg.clara.top_k)
    models = {"before_stage3": ClaraModel.from_pretrained(out / "stage2" / "final")}
    models["before_stage3"].init_query_reasoner_from_compressor()
    for name in ("stage3", "stage3_frozen_reasoner"):
        if (out / name / "final").is_dir():
            models[f"after_{name}"] = ClaraModel.from_pretrained(out / name / "final")
    result: dict = {}
    for split in ("train", "test"):
        examples = read_stage(data / f"stage3_{split}.jsonl", 3)[:n_questions]
        result[split] = {"n_questions": len(examples), "n_candidates": len(examples[0].docs)}
        for name, model in models.items():
            result[split][name] = stage3_recall(model, examples, question_max_length=cfg.clara.question_max_length)
    return result


def render_world_pdf(path: Path, world_seed: int = 0, max_docs: int = 60, split: str = "test",
                     train_docs: int = 96, top_k: int = 1) -> Path:
    """A multi-page PDF of the embedded world's CLaRa documents of one split: "test" (held out
    from every stage) or "train" (the documents stages 1-3 trained on)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    data = embedded_clara_dir(world_seed, train_docs, top_k)
    texts = {x.doc for x in read_stage(data / f"stage1_{split}.jsonl", 1)}
    docs = [d for d in read_passages(data / "documents.jsonl") if d.text in texts][:max_docs]
    return render_pdf([(d.title, d.text) for d in docs], path)


def run_demo(output_dir: str | Path, configs: Path, overrides: list[str] = (), pdf_overrides: list[str] = ()) -> dict:
    out = Path(output_dir)
    overrides = list(overrides)
    stages = train_stages(out, configs, overrides)
    recall = recall_before_after(out, configs, overrides)
    c = load_config(configs / "clara" / "stage3.yaml", overrides).clara
    # The world's own questions: the PDFs are the world's documents (qa.source: cloze works on any text).
    pdf_cfg = load_eval_pdf_config(configs / "clara" / "eval_pdf.yaml", ["qa.source=world", *pdf_overrides])
    summary = {"stages": stages, "recall": recall}
    for key, split, name in (("eval_pdf", "test", "embedded_world"), ("eval_pdf_seen", "train", "embedded_world_seen")):
        pdf = render_world_pdf(out / f"{name}.pdf", c.world_seed, split=split, train_docs=c.train_docs, top_k=c.top_k)
        summary[key] = eval_pdf(pdf, out / "stage3" / "final", out / key, pdf_cfg,
                                compression_model_dir=out / "stage1" / "final")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    print(f"summary written to {out / 'summary.json'}; PDF report {out / 'eval_pdf' / 'report.md'}")
    return summary


def format_summary(summary: dict) -> str:
    lines = ["CLaRa on the embedded world"]
    for name, m in summary["stages"].items():
        keys = [k for k in ("val/loss", "val/mse", "val/memory_gain", "val/recall_at_1") if k in m]
        lines.append(f"  {name:<24} " + "  ".join(f"{k} {m[k]:.3f}" for k in keys))
    for split, r in summary["recall"].items():
        lines.append(f"  Recall@1 on {r['n_questions']} {split} questions ({r['n_candidates']} candidates each):")
        for name in ("before_stage3", "after_stage3", "after_stage3_frozen_reasoner"):
            if name in r:
                lines.append(f"    {name:<30} {r[name].get('recall_at_1', float('nan')):.3f}")
    for key, what in (("eval_pdf", "held-out documents"), ("eval_pdf_seen", "training documents")):
        if key not in summary:
            continue
        lines.append(f"  PDF of {what}:")
        for name, m in summary[key]["scenarios"].items():
            lines.append(f"    {name:<18} EM {m['em']:.3f}  F1 {m['f1']:.3f}  cover-EM {m['cover_em']:.3f}"
                         + (f"  Recall@1 {m['recall@1']:.3f}" if "recall@1" in m else ""))
        lines.append(f"    reconstruction F1 (stage 1) {summary[key]['compression']['reconstruction_f1']:.3f}")
    return "\n".join(lines)
