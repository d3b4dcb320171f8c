"""`wmtp clara eval-pdf FILE.pdf`: a trained CLaRa model on any PDF, in two parts.

`prepare_pdf` does everything that can fail on the user's input, before any model is built or
loaded: the text is extracted and cut into sentence-aligned chunks, and QA pairs come from a
JSONL file, from the text itself (`cloze`, the default: extractive questions whose answers are
the chunk's dates, numbers and names; no teacher, no model), from a chat teacher (the StepER
teacher interface: a local HF model such as `embedded:smollm2`, or an OpenAI-compatible
endpoint) or, for the embedded world's documents, from its facts. The chunks and the pairs are
written to the output directory first (chunks.jsonl, qa_pairs.jsonl), so they can be read,
edited and passed back (`--qa FILE`).

`evaluate_pdf` then runs the scenarios: zero-shot (no document), RAG (the query reasoner picks
top-k of the PDF's compressed chunks), RAG with BM25's picks over the raw chunk text (the same
generator and compressed chunks: a reference for the query reasoner's retrieval), oracle (the
gold chunk, compressed) and compression
quality (the chunk regenerated from its memory vectors alone). Compression quality is a stage-1
skill: a stage-2/3 generator is tuned to answer and no longer paraphrases, so it may be measured
with another model (the stage-1 one, as upstream's `stage1_paraphrase` evaluation does).
Writes predictions.jsonl, summary.json and report.md."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch

from weighted_mtp.clara.cloze import ClozeQAGenerator
from weighted_mtp.clara.evaluate import answer, compress_texts, rank_documents
from weighted_mtp.clara.model import CLARA_CONFIG_FILE, ClaraModel
from weighted_mtp.clara.pdf import Chunk, chunk_text, chunks_to_passages, extract_text
from weighted_mtp.clara.qa_pairs import (QAPair, TeacherQAGenerator, WorldQAGenerator, generate_qa, read_qa_jsonl,
                                         write_qa_jsonl)
from weighted_mtp.clara.report import compression_metrics, render_markdown, scenario_metrics
from weighted_mtp.config.load import load_dataclass_config
from weighted_mtp.errors import ConfigError, DataError, WMTPError
from weighted_mtp.jsonl import write_jsonl
from weighted_mtp.models.load import resolve_model_path
from weighted_mtp.rag.retrievers import BM25Retriever
from weighted_mtp.steper.teachers import build_teacher
from weighted_mtp.world.world import build_world


@dataclass
class QATeacherConfig:
    model_path: Optional[str] = None  # source hf: a local HF causal-LM directory, or embedded:smollm2
    base_url: Optional[str] = None  # source openai: an OpenAI-compatible endpoint
    model: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"
    max_new_tokens: int = 128


@dataclass
class QASourceConfig:
    source: Literal["cloze", "world", "file", "hf", "openai"] = "cloze"
    file: Optional[str] = None
    n_per_chunk: int = 2
    teacher: QATeacherConfig = field(default_factory=QATeacherConfig)


@dataclass
class EvalPdfConfig:
    base: Literal["micro", "smollm2"] = "smollm2"  # the default model's base when no --model is given
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
    if cfg.qa.source == "hf" and not cfg.qa.teacher.model_path:
        raise ConfigError(f"{path}: config key 'qa.teacher.model_path' is required for qa.source: hf "
                          "(a local HF model directory, or embedded:smollm2)")
    if cfg.qa.source == "openai" and not (cfg.qa.teacher.base_url and cfg.qa.teacher.model):
        raise ConfigError(f"{path}: config keys 'qa.teacher.base_url' and 'qa.teacher.model' are required "
                          "for qa.source: openai")
    if cfg.top_k < 1 or cfg.chunk_max_words < 5:
        raise ConfigError(f"{path}: config keys 'top_k' >= 1 and 'chunk_max_words' >= 5 are required")
    for key in ("max_questions", "max_new_tokens", "batch_size", "qa.n_per_chunk"):
        value = getattr(cfg.qa, key[3:]) if key.startswith("qa.") else getattr(cfg, key)
        if value < 1:
            raise ConfigError(f"{path}: config key '{key}' must be >= 1, got {value}")
    return cfg


def check_model_dir(path: str | Path, what: str = "--model") -> Path:
    """A CLaRa model directory (a RUN/final or the default's): checked before anything is built."""
    path = Path(path)
    if not (path / CLARA_CONFIG_FILE).is_file():
        hint = " (a training run's model is RUN/final)" if (path / "final" / CLARA_CONFIG_FILE).is_file() else ""
        raise WMTPError(f"{what} {path}: not a CLaRa model directory (no {CLARA_CONFIG_FILE}){hint}")
    return path


def _qa_generator(cfg: EvalPdfConfig):
    qa, t = cfg.qa, cfg.qa.teacher
    if qa.source == "cloze":
        return ClozeQAGenerator(n_per_chunk=qa.n_per_chunk)
    if qa.source == "world":
        return WorldQAGenerator(build_world(seed=cfg.world_seed))
    if qa.source == "hf":
        model_path = t.model_path
        if model_path.startswith("embedded:"):  # a packaged model, e.g. SmolLM2-135M-Instruct
            model_path = str(resolve_model_path(model_path))
        teacher = build_teacher("hf", model_dir=model_path, max_new_tokens=t.max_new_tokens)
    else:
        teacher = build_teacher("openai", base_url=t.base_url, model=t.model, api_key=os.environ.get(t.api_key_env),
                                max_tokens=t.max_new_tokens)
    return TeacherQAGenerator(teacher, n_per_chunk=qa.n_per_chunk)


@dataclass
class PreparedPdf:
    """A PDF ready to evaluate: its text, chunks and QA pairs (all checked), and where the chunks
    and pairs were written."""

    pdf: Path
    pages: list[str]
    chunks: list[Chunk]
    pairs: list[QAPair]
    qa_file: Path
    chunks_file: Path
    seconds: float = 0.0


def _pairs_from_file(path: Path, chunks: list[Chunk], cfg: EvalPdfConfig) -> list[QAPair]:
    pairs = read_qa_jsonl(path)
    ids = {c.cid for c in chunks}
    for n, p in enumerate(pairs, 1):
        if p.chunk_id is not None and p.chunk_id not in ids:
            raise DataError(f"{path}: pair {n}: chunk_id {p.chunk_id!r} is not a chunk of this PDF ({len(chunks)} "
                            f"chunks, c0..c{len(chunks) - 1}, at chunk_max_words={cfg.chunk_max_words}; "
                            "see chunks.jsonl, or set chunk_id to null)")
    return pairs


def prepare_pdf(pdf: str | Path, output_dir: str | Path, cfg: EvalPdfConfig) -> PreparedPdf:
    """Extract, chunk and get the QA pairs; write chunks.jsonl and qa_pairs.jsonl. Every error of
    the input (no such file, no text, no question found, a bad QA file) is raised here."""
    start = time.perf_counter()
    pdf, out = Path(pdf), Path(output_dir)
    pages = extract_text(pdf)  # a PDF without text stops here with a clear error
    chunks = chunk_text(pages, max_words=cfg.chunk_max_words)
    if cfg.qa.source == "file":
        pairs = _pairs_from_file(Path(cfg.qa.file), chunks, cfg)
    else:
        try:
            pairs = generate_qa(chunks, _qa_generator(cfg))
        except WMTPError as exc:
            raise WMTPError(f"{pdf}: {exc}") from None
    pairs = pairs[: cfg.max_questions]
    out.mkdir(parents=True, exist_ok=True)
    chunks_file = write_jsonl(out / "chunks.jsonl", ({"chunk_id": c.cid, "page": c.page, "text": c.text}
                                                     for c in chunks))
    qa_file = write_qa_jsonl(out / "qa_pairs.jsonl", pairs)
    return PreparedPdf(pdf, pages, chunks, pairs, qa_file, chunks_file, time.perf_counter() - start)


def eval_pdf(pdf: str | Path, model_dir: str | Path, output_dir: str | Path, cfg: EvalPdfConfig,
             compression_model_dir: str | Path | None = None) -> dict:
    """prepare_pdf, then evaluate_pdf: the whole evaluation of one PDF with one model."""
    return evaluate_pdf(prepare_pdf(pdf, output_dir, cfg), model_dir, output_dir, cfg, compression_model_dir)


def evaluate_pdf(prep: PreparedPdf, model_dir: str | Path, output_dir: str | Path, cfg: EvalPdfConfig,
                 compression_model_dir: str | Path | None = None, extra: dict | None = None) -> dict:
    """The scenarios of a prepared PDF with a CLaRa model; `extra` goes into summary.json as is
    (the CLI records how long a default model took to build)."""
    start = time.perf_counter()
    out, chunks, pairs = Path(output_dir), prep.chunks, prep.pairs
    model = ClaraModel.from_pretrained(check_model_dir(model_dir))
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
    # The same generator on BM25's picks over the raw chunk text: tells a retrieval miss of the
    # query reasoner from an answer the compressed chunk does not carry.
    bm25 = [[h.pid for h in row] for row in BM25Retriever.build(chunks_to_passages(chunks)).search(questions, k)]
    predictions["rag_bm25"] = answer(model, questions, memory[torch.tensor([[index[c] for c in row] for row in bm25])],
                                     max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    scenarios = {"zero_shot": scenario_metrics(predictions["zero_shot"], pairs),
                 f"rag_top{k}": scenario_metrics(predictions["rag"], pairs, retrieved),
                 f"rag_bm25_top{k}": scenario_metrics(predictions["rag_bm25"], pairs, bm25)}
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
        recon = ClaraModel.from_pretrained(check_model_dir(compression_model_dir, "--compression-model")).eval()
        recon_memory = compress_texts(recon, [c.text for c in chunks], batch_size=cfg.batch_size)
    reconstructions = answer(recon, [None] * len(chunks), recon_memory.unsqueeze(1), instruction="paraphrase",
                             max_new_tokens=2 * cfg.chunk_max_words, batch_size=cfg.batch_size)
    raw = recon.tokenizer([c.text for c in chunks], add_special_tokens=False)["input_ids"]
    raw_tokens = sum(min(len(ids), recon.cfg.doc_max_length) for ids in raw) / len(raw)  # what the compressor reads
    compression = {**compression_metrics(reconstructions, chunks, raw_tokens=raw_tokens, memory_tokens=recon.cfg.n_mem),
                   "model": str(compression_model_dir)}
    write_jsonl(out / "predictions.jsonl", (
        {**asdict(p), **{f"pred_{s}": v[i] for s, v in predictions.items()}, "retrieved": retrieved[i]}
        for i, p in enumerate(pairs)))
    write_jsonl(out / "reconstructions.jsonl", ({"chunk_id": c.cid, "text": c.text, "reconstruction": r}
                                                for c, r in zip(chunks, reconstructions)))
    summary = {
        "pdf": {"path": str(prep.pdf), "pages": len(prep.pages), "chunks": len(chunks), "qa_pairs": len(pairs),
                "qa_source": cfg.qa.source if cfg.qa.source != "file" else f"file {cfg.qa.file}",
                "qa_file": str(prep.qa_file)},
        "model": str(model_dir),
        "scenarios": scenarios,
        "compression": compression,
        "examples": [{"question": pairs[i].question, "answer": pairs[i].answer,
                      **{s: predictions[s][i] for s in predictions}} for i in range(min(5, len(pairs)))],
        "seconds": {"prepare": round(prep.seconds, 1), "evaluate": round(time.perf_counter() - start, 1)},
        **(extra or {}),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(summary))
    return summary
