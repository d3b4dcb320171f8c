"""`wmtp clara eval-pdf FILE.pdf`: a trained CLaRa model on any PDF. The text is extracted and cut
into sentence-aligned chunks; QA pairs come from a JSONL file or are written by a teacher (the
StepER teacher interface; for the embedded world, one built on its facts). Scenarios:
zero-shot (no document), RAG (the query reasoner picks top-k of the PDF's compressed chunks),
oracle (the gold chunk, compressed) and compression quality (the chunk regenerated from its
memory vectors alone). Compression quality is a stage-1 skill: a stage-2/3 generator is tuned to
answer and no longer paraphrases, so it may be measured with another model (the stage-1 one,
as upstream's `stage1_paraphrase` evaluation does). Writes qa_pairs.jsonl, predictions.jsonl,
summary.json and report.md."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch

from weighted_mtp.config.load import load_dataclass_config
from weighted_mtp.errors import ConfigError, WMTPError


@dataclass
class QATeacherConfig:
    model_path: Optional[str] = None  # source hf: a local HF causal-LM directory
    base_url: Optional[str] = None  # source openai: an OpenAI-compatible endpoint
    model: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"
    max_new_tokens: int = 128


@dataclass
class QASourceConfig:
    source: Literal["world", "file", "hf", "openai"] = "world"
    file: Optional[str] = None
    n_per_chunk: int = 2
    teacher: QATeacherConfig = field(default_factory=QATeacherConfig)


@dataclass
class EvalPdfConfig:
    chunk_max_words: int = 40
    top_k: int = 1
    max_questions: int = 200
    max_new_tokens: int = 32
    batch_size: int = 32
    world_seed: int = 0
    qa: QASourceConfig = field(default_factory=QASourceConfig)


def load_eval_pdf_config(path: str | Path, overrides: list[str] | None = None) -> EvalPdfConfig:
    cfg = load_dataclass_config(EvalPdfConfig, path, overrides)
    if cfg.qa.source == "file" and not cfg.qa.file:
        raise ConfigError(f"{path}: config key 'qa.file' is required for qa.source: file")
    if cfg.top_k < 1 or cfg.chunk_max_words < 5:
        raise ConfigError(f"{path}: config keys 'top_k' >= 1 and 'chunk_max_words' >= 5 are required")
    return cfg


def _qa_generator(cfg: EvalPdfConfig):
    from weighted_mtp.clara.qa_pairs import TeacherQAGenerator, WorldQAGenerator
    from weighted_mtp.steper.teachers import build_teacher

    qa, t = cfg.qa, cfg.qa.teacher
    if qa.source == "world":
        from weighted_mtp.steper.world import build_world

        return WorldQAGenerator(build_world(seed=cfg.world_seed))
    if qa.source == "hf":
        teacher = build_teacher("hf", model_dir=t.model_path, max_new_tokens=t.max_new_tokens)
    else:
        teacher = build_teacher("openai", base_url=t.base_url, model=t.model, api_key=os.environ.get(t.api_key_env),
                                max_tokens=t.max_new_tokens)
    return TeacherQAGenerator(teacher, n_per_chunk=qa.n_per_chunk)


def eval_pdf(pdf: str | Path, model_dir: str | Path, output_dir: str | Path, cfg: EvalPdfConfig,
             compression_model_dir: str | Path | None = None) -> dict:
    from weighted_mtp.clara.evaluate import answer, compress_texts, rank_documents
    from weighted_mtp.clara.model import ClaraModel
    from weighted_mtp.clara.pdf import chunk_text, extract_text
    from weighted_mtp.clara.qa_pairs import generate_qa, read_qa_jsonl, write_qa_jsonl
    from weighted_mtp.clara.report import compression_metrics, render_markdown, scenario_metrics

    pdf, out = Path(pdf), Path(output_dir)
    pages = extract_text(pdf)  # a PDF without text stops here with a clear error
    chunks = chunk_text(pages, max_words=cfg.chunk_max_words)
    pairs = read_qa_jsonl(cfg.qa.file) if cfg.qa.source == "file" else generate_qa(chunks, _qa_generator(cfg))
    pairs = pairs[: cfg.max_questions]
    if not pairs:
        raise WMTPError(f"{pdf}: no QA pairs to evaluate ({cfg.qa.source} source found none in {len(chunks)} chunks)")
    out.mkdir(parents=True, exist_ok=True)
    write_qa_jsonl(out / "qa_pairs.jsonl", pairs)

    model = ClaraModel.from_pretrained(model_dir)
    model.eval()
    memory = compress_texts(model, [c.text for c in chunks], batch_size=cfg.batch_size)  # offline, once
    index = {c.cid: i for i, c in enumerate(chunks)}
    questions = [p.question for p in pairs]
    k = min(cfg.top_k, len(chunks))
    top = rank_documents(model, questions, memory).topk(k, dim=1).indices
    gold = [index.get(p.chunk_id) for p in pairs]
    predictions = {
        "zero_shot": answer(model, questions, None, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size),
        "rag": answer(model, questions, memory[top], max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size),
    }
    retrieved = [[chunks[i].cid for i in row] for row in top.tolist()]
    scenarios = {"zero_shot": scenario_metrics(predictions["zero_shot"], pairs),
                 f"rag_top{k}": scenario_metrics(predictions["rag"], pairs, retrieved)}
    with_gold = [i for i, g in enumerate(gold) if g is not None]
    if with_gold:
        slots = memory[torch.tensor([gold[i] for i in with_gold])].unsqueeze(1)
        oracle = answer(model, [questions[i] for i in with_gold], slots, max_new_tokens=cfg.max_new_tokens,
                        batch_size=cfg.batch_size)
        predictions["oracle"] = [""] * len(pairs)
        for i, text in zip(with_gold, oracle):
            predictions["oracle"][i] = text
        scenarios["oracle_chunk"] = scenario_metrics(oracle, [pairs[i] for i in with_gold])
    compression_model_dir = Path(compression_model_dir or model_dir)
    recon, recon_memory = model, memory
    if compression_model_dir != Path(model_dir):
        recon = ClaraModel.from_pretrained(compression_model_dir).eval()
        recon_memory = compress_texts(recon, [c.text for c in chunks], batch_size=cfg.batch_size)
    reconstructions = answer(recon, [None] * len(chunks), recon_memory.unsqueeze(1), instruction="paraphrase",
                             max_new_tokens=2 * cfg.chunk_max_words, batch_size=cfg.batch_size)
    raw = recon.tokenizer([c.text for c in chunks], add_special_tokens=False)["input_ids"]
    raw_tokens = sum(min(len(ids), recon.cfg.doc_max_length) for ids in raw) / len(raw)  # what the compressor reads
    compression = {**compression_metrics(reconstructions, chunks, raw_tokens=raw_tokens, memory_tokens=recon.cfg.n_mem),
                   "model": str(compression_model_dir)}
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for i, p in enumerate(pairs):
            f.write(json.dumps({**asdict(p), **{f"pred_{s}": v[i] for s, v in predictions.items()},
                                "retrieved": retrieved[i]}, ensure_ascii=False) + "\n")
    summary = {
        "pdf": {"path": str(pdf), "pages": len(pages), "chunks": len(chunks), "qa_pairs": len(pairs),
                "qa_source": cfg.qa.source},
        "model": str(model_dir),
        "scenarios": scenarios,
        "compression": compression,
        "examples": [{"question": pairs[i].question, "answer": pairs[i].answer,
                      **{s: predictions[s][i] for s in predictions}} for i in range(min(5, len(pairs)))],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(summary))
    return summary
