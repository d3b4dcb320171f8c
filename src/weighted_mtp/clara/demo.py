"""`wmtp clara demo`: CLaRa's three stages on the embedded world through the one training loop,
the frozen-reasoner control, Recall@1 before and after stage 3 on held-out questions, and the
PDF evaluation on two PDFs rendered from the embedded world: its held-out (test) documents and
the documents it trained on, which tells a harness problem from a model that does not generalise.
Writes summary.json.
Finished stages are reused, so an interrupted demo continues where it stopped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from weighted_mtp.config import load_config


def _run_stage(configs: Path, name: str, run_dir: Path, overrides: list[str]) -> dict:
    from weighted_mtp.training.loop import train

    cfg = load_config(configs / "clara" / f"{name}.yaml", overrides)
    if not (run_dir / "final" / "clara_config.json").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        result = train(cfg, run_dir)
        metrics = {**result.last_train, **result.last_val, "tokens_per_s": result.tokens_per_s,
                   "peak_memory_mb": result.peak_memory_mb}
        (run_dir / "final_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return json.loads((run_dir / "final_metrics.json").read_text())


def train_stages(out: Path, configs: Path, overrides: list[str] = (), control: bool = True) -> dict[str, dict]:
    """stage1 -> stage2 -> stage3 (and stage3_frozen_reasoner from the same stage-2 model)."""
    overrides = list(overrides)
    results = {"stage1": _run_stage(configs, "stage1", out / "stage1", overrides)}
    results["stage2"] = _run_stage(configs, "stage2", out / "stage2",
                                   [f"clara.init_from={out / 'stage1' / 'final'}", *overrides])
    stage2 = out / "stage2" / "final"
    results["stage3"] = _run_stage(configs, "stage3", out / "stage3", [f"clara.init_from={stage2}", *overrides])
    if control:
        results["stage3_frozen_reasoner"] = _run_stage(
            configs, "stage3", out / "stage3_frozen_reasoner",
            [f"clara.init_from={stage2}", "clara.train_query_reasoner=false", *overrides])
    return results


def recall_before_after(out: Path, configs: Path, overrides: list[str], n_questions: int = 300) -> dict:
    """Recall@1/3 of the query reasoner over each question's candidates: initialised from the
    stage-2 compressor (before), after stage 3, and after the frozen-reasoner control; on the
    stage-3 training questions (documents the compressor learned in stages 1-2) and on held-out
    test questions (documents no stage has seen)."""
    from weighted_mtp.clara.data import read_stage
    from weighted_mtp.clara.evaluate import stage3_recall
    from weighted_mtp.clara.model import ClaraModel
    from weighted_mtp.clara.resources import embedded_clara_dir

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
    from weighted_mtp.clara.data import read_stage
    from weighted_mtp.clara.pdf import render_pdf
    from weighted_mtp.clara.resources import embedded_clara_dir
    from weighted_mtp.rag.passages import read_passages

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    data = embedded_clara_dir(world_seed, train_docs, top_k)
    texts = {x.doc for x in read_stage(data / f"stage1_{split}.jsonl", 1)}
    docs = [d for d in read_passages(data / "documents.jsonl") if d.text in texts][:max_docs]
    return render_pdf([(d.title, d.text) for d in docs], path)


def run_demo(output_dir: str | Path, configs: Path, overrides: list[str] = (), pdf_overrides: list[str] = ()) -> dict:
    from weighted_mtp.clara.eval_pdf import eval_pdf, load_eval_pdf_config

    out = Path(output_dir)
    overrides = list(overrides)
    stages = train_stages(out, configs, overrides)
    recall = recall_before_after(out, configs, overrides)
    c = load_config(configs / "clara" / "stage3.yaml", overrides).clara
    pdf_cfg = load_eval_pdf_config(configs / "clara" / "eval_pdf.yaml", list(pdf_overrides))
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


def ensure_default_model(configs: Path, world_seed: int = 0) -> Path:
    """The embedded default CLaRa model (stage 3 on the embedded world), trained once and cached,
    with its stage-1 model under `stage1/` (the one that still paraphrases: compression quality)."""
    import hashlib

    from weighted_mtp.files import building_dir
    from weighted_mtp.models.micro import cache_root

    texts = "".join((configs / "clara" / f"stage{i}.yaml").read_text() for i in (1, 2, 3))
    key = hashlib.sha256(f"{world_seed}:{texts}".encode()).hexdigest()[:12]
    out = cache_root() / "models" / f"clara-default-{key}"
    if (out / "clara_config.json").is_file():
        return out
    work = cache_root() / "runs" / f"clara-default-{key}"
    train_stages(work, configs, [f"clara.world_seed={world_seed}", "mlflow.enabled=false"], control=False)
    with building_dir(out) as tmp:
        shutil.copytree(work / "stage3" / "final", tmp, dirs_exist_ok=True)
        shutil.copytree(work / "stage1" / "final", tmp / "stage1")
    return out
