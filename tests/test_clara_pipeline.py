"""CLaRa through the one training loop on a tiny base: the three stages chain, stage 3 leaves the
compressor untouched and trains the query reasoner (unless it is the frozen control), each stage
saves peft-loadable adapters, `wmtp clara validate-data`, and `wmtp clara eval-pdf` end to end on
a real multi-page PDF (and a clear error on a PDF without text)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from weighted_mtp.cli import main

TINY = ["training.batch_size=4", "training.log_interval=1", "training.lr_scheduler.warmup_ratio=0.0",
        "training.mixed_precision=fp32", "data_sampling.n_samples=24", "data_sampling.val_n_samples=8",
        "mlflow.enabled=false", "clara.doc_max_length=32", "clara.compression_rate=8",
        "clara.generator_max_length=160", "clara.question_max_length=24"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, wmtp_cache):
    """A 2-layer Llama with a tokenizer trained on the embedded world's text."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from weighted_mtp.models.micro import train_tokenizer
    from weighted_mtp.world.world import build_world, world_texts

    out = tmp_path_factory.mktemp("clara") / "tiny-base"
    tok = train_tokenizer(list(world_texts(build_world(seed=0))), vocab_size=1200)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id))
    lm.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def stages(tmp_path_factory, tiny_base):
    from weighted_mtp.recipes.clara_demo import train_stages
    from weighted_mtp.config.load import load_config  # noqa: F401  (configs resolve from the repo)
    from conftest import REPO

    out = tmp_path_factory.mktemp("clara-stages")
    results = train_stages(out, REPO / "configs",
                           [*TINY, "training.max_steps=3", f"clara.base_model={tiny_base}", "training.eval_every=0.0"])
    return out, results


def _adapter(directory, name):
    from safetensors.torch import load_file

    files = list((directory / "adapters" / name).glob("adapter_model.safetensors"))
    assert files, f"no adapter file for {name} under {directory}"
    return load_file(files[0])


def _validation_items(run_dir: Path):
    """The run's objective, its exported model and the validation items the loop evaluated."""
    from weighted_mtp.config import load_config
    from weighted_mtp.objectives import OBJECTIVES

    cfg = load_config(run_dir / "config.yaml")
    objective = OBJECTIVES[cfg.experiment.stage](cfg)
    model = objective.load_model(run_dir / "final")
    model.eval()
    _, items = objective.load_items("validation")
    return cfg, objective, model, items[: cfg.data_sampling.val_n_samples]


def test_three_stages_chain_and_stage3_trains_only_reasoner_and_generator(stages):
    from weighted_mtp.clara.evaluate import stage3_recall
    from weighted_mtp.models.load import load_tokenizer
    from weighted_mtp.training.validation import evaluate_split

    out, results = stages
    # The logged stage-1 val/mse is the exported model's over the whole validation split (one
    # batch-size-4 pass, the loop's order), not a number of some earlier state.
    cfg, objective, model, items = _validation_items(out / "stage1")
    collate = objective.make_collator(load_tokenizer(out / "stage1" / "final"), "validation")
    again, _ = evaluate_split(model, objective, items, collate, cfg.training.batch_size, torch.device("cpu"),
                              contextlib.nullcontext)
    assert len(items) == 8 and results["stage1"]["val/mse"] == pytest.approx(again["mse"], rel=1e-5, abs=1e-8)
    # Stage 3's logged recall@1 is what the inference code (clara/evaluate.py, a separate path:
    # compress each candidate, encode the question, rank by cosine) counts for the exported model.
    cfg, _, model, items = _validation_items(out / "stage3")
    recount = stage3_recall(model, items, ks=(1,), question_max_length=cfg.clara.question_max_length)
    assert results["stage3"]["val/recall_at_1"] == pytest.approx(recount["recall_at_1"], abs=1e-6)
    s2, s3, frozen = out / "stage2" / "final", out / "stage3" / "final", out / "stage3_frozen_reasoner" / "final"
    for d in (s2, s3):
        comp_before, comp_after = _adapter(s2, "compressor"), _adapter(d, "compressor")
        assert all(torch.equal(comp_before[k], comp_after[k]) for k in comp_before)  # never trained in stage 3
    qr, comp = _adapter(s3, "query_reasoner"), _adapter(s2, "compressor")
    assert any(not torch.equal(qr[k], comp[k]) for k in qr)  # initialised from the compressor, then trained
    qr_frozen = _adapter(frozen, "query_reasoner")
    assert all(torch.equal(qr_frozen[k], comp[k]) for k in qr_frozen)  # the control keeps the copy
    g2, g3 = _adapter(s2, "generator"), _adapter(s3, "generator")
    assert any(not torch.equal(g2[k], g3[k]) for k in g2)


def test_a_continued_stage_keeps_the_models_compression_rate(stages, tmp_path):
    """Stage 2 reads l and the document width from the stage-1 model, not from its own config:
    the model was trained at 32 tokens / rate 8 (l = 4) and the config says 64 / 4 (l = 16)."""
    from conftest import REPO

    from weighted_mtp.recipes.clara_build import run_stage
    from weighted_mtp.clara.model import ClaraConfig

    out, _ = stages
    overrides = [*TINY, "training.max_steps=1", "training.eval_every=0.0", f"clara.init_from={out / 'stage1' / 'final'}",
                 "clara.doc_max_length=64", "clara.compression_rate=4"]  # l = 16 if the config ruled
    run_stage(REPO / "configs", "stage2", tmp_path / "stage2", overrides)
    saved = ClaraConfig.from_file(tmp_path / "stage2" / "final" / "clara_config.json")
    assert (saved.doc_max_length, saved.compression_rate, saved.n_mem) == (32, 8, 4)


def test_each_stage_adapter_loads_with_peft(stages, tiny_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _ = stages
    final = out / "stage1" / "final"
    base = AutoModelForCausalLM.from_pretrained(final / "base")
    model = PeftModel.from_pretrained(base, final / "adapters" / "generator")
    saved = _adapter(final, "generator")
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(saved) > 0
    for name, tensor in saved.items():  # peft keys drop the adapter name: "...lora_A.weight"
        match = [p for n, p in loaded.items() if n.replace(".default", "").endswith(name.split("base_model.model.")[-1])]
        assert len(match) == 1, name
        assert torch.equal(match[0].detach(), tensor), name  # the trained weights, not a fresh init
    assert any(t.abs().sum() > 0 for n, t in saved.items() if "lora_B" in n)  # lora_B starts at zero: it trained


def test_validate_data_cli(tmp_path, capsys, wmtp_cache):
    from weighted_mtp.clara.resources import embedded_clara_dir

    good = embedded_clara_dir(0) / "stage3_valid.jsonl"
    assert main(["clara", "validate-data", str(good), "--stage", "3"]) == 0
    assert "ok:" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text().splitlines()[0] + "\n" + '{"question": "q", "docs": ["d"], "gold_answer": "a"}\n')
    assert main(["clara", "validate-data", str(bad), "--stage", "2"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "answer" in err


def test_world_pdf_renders_the_split_it_is_asked_for(tmp_path, wmtp_cache):
    from weighted_mtp.clara.data import read_stage
    from weighted_mtp.recipes.clara_demo import render_world_pdf
    from weighted_mtp.clara.pdf import extract_text
    from weighted_mtp.clara.resources import embedded_clara_dir

    data = embedded_clara_dir(0)
    seen = {x.doc for x in read_stage(data / "stage1_train.jsonl", 1)}
    held_out = {x.doc for x in read_stage(data / "stage1_test.jsonl", 1)}
    for split, inside, outside in (("train", seen, held_out), ("test", held_out, seen)):
        text = " ".join(" ".join(extract_text(render_world_pdf(tmp_path / f"{split}.pdf", max_docs=6, split=split))).split())
        assert sum(doc in text for doc in inside) == 6, split
        assert not any(doc in text for doc in outside), split
    with pytest.raises(ValueError, match="split"):
        render_world_pdf(tmp_path / "x.pdf", split="valid")


def test_eval_pdf_end_to_end_and_textless_pdf(stages, tmp_path, capsys):
    from weighted_mtp.recipes.clara_demo import render_world_pdf
    from weighted_mtp.clara.pdf import extract_text

    out, _ = stages
    pdf = render_world_pdf(tmp_path / "world.pdf", max_docs=30)
    assert len(extract_text(pdf)) >= 2  # a real multi-page PDF
    report_dir = tmp_path / "report"
    assert main(["clara", "eval-pdf", str(pdf), "--model", str(out / "stage3" / "final"), "--output-dir",
                 str(report_dir), "--override", "max_questions=12", "--override", "chunk_max_words=20",
                 "--compression-model", str(out / "stage1" / "final")]) == 0
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["compression"]["model"] == str(out / "stage1" / "final")
    assert 0.0 <= summary["compression"]["reconstruction_f1"] <= 1.0 and summary["compression"]["n"] == summary["pdf"]["chunks"]
    assert {"zero_shot", "rag_top1", "oracle_chunk"} <= set(summary["scenarios"])
    assert 0.0 <= summary["scenarios"]["rag_top1"]["recall@1"] <= 1.0
    assert summary["pdf"]["pages"] >= 2 and summary["pdf"]["qa_pairs"] == 12
    assert "| rag" in (report_dir / "report.md").read_text().lower() or "rag" in (report_dir / "report.md").read_text()

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_pdf import PdfPages
    import matplotlib.pyplot as plt

    blank = tmp_path / "scan.pdf"
    with PdfPages(blank) as pages:
        fig = plt.figure()
        fig.add_subplot().plot([0, 1], [1, 0])
        plt.axis("off")
        pages.savefig(fig)
        plt.close(fig)
    capsys.readouterr()
    assert main(["clara", "eval-pdf", str(blank), "--model", str(out / "stage3" / "final")]) == 2
    assert "no extractable text" in capsys.readouterr().err


def _fake_train_stages(out, calls):
    """Stands in for the default build: copies the tiny stages (calls records each build)."""
    import shutil

    def fake(work, configs, overrides, control=True, stages=(), checkpoints=0):
        calls.append(work)
        for name in ("stage1", stages[-1].split("_")[0]):
            shutil.copytree(out / name / "final", work / name / "final", dirs_exist_ok=True)
    return fake


def test_eval_pdf_default_model_is_trained_once_and_measures_compression_with_its_stage1(stages, tmp_path,
                                                                                          monkeypatch):
    import weighted_mtp.recipes.clara_build as build
    from weighted_mtp.recipes.clara_demo import render_world_pdf

    out, _ = stages
    calls = []
    monkeypatch.setenv("WMTP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "train_stages", _fake_train_stages(out, calls))
    pdf = render_world_pdf(tmp_path / "world.pdf", max_docs=8)
    for run in ("first", "second"):
        report = tmp_path / run
        assert main(["clara", "eval-pdf", str(pdf), "--output-dir", str(report), "--override", "max_questions=4",
                     "--override", "qa.source=world", "--base", "micro"]) == 0
        summary = json.loads((report / "summary.json").read_text())
        default = tmp_path / "cache" / "models"
        assert summary["model"].startswith(str(default)) and "clara-default-" in summary["model"]
        assert summary["compression"]["model"] == summary["model"] + "/stage1"
        assert summary["default_model"]["cached"] == (run == "second")
    assert len(calls) == 1  # cached after the first run


# ---------------------------------------------------------------- any PDF, fail fast, resume

ORDINARY = [  # ordinary sentences, none from the embedded world
    ("The harbour town", "The harbour of Kessling was dredged in 1887 to admit larger ships. Fishing boats still "
     "land about 40 tons of herring every week. The old lighthouse was designed by Agnes Whitby and first lit in "
     "1891. A ferry to Norhaven leaves twice a day in the summer."),
    ("The market", "The covered market opened on May 3, 1902 after years of argument in the council. It has "
     "room for 120 stalls under one roof. Cheese from Oldmere is sold there every Saturday. A cup of coffee at "
     "the corner stall costs $2.40 and a pastry costs a little more."),
    ("The railway", "The railway reached the town in 1869 and carried wool to Bradley for decades. The station "
     "clock was a gift from Thomas Grell, a local watchmaker. Trains to the capital take 3 hours today. The line "
     "along the coast was closed in 1964 and is now a walking path."),
    ("The school", "The grammar school was founded in 1723 by the merchant Henry Castle. About 600 pupils study "
     "there now. Its library holds a map of the coast drawn in 1750 by the surveyor John Penrose. Lessons in "
     "navigation were given until 1912."),
    ("The festival", "Every August the town holds a boat festival that draws 15,000 visitors. The first festival "
     "was held in 1948 to raise money for the hospital. Musicians come from Galway and from Brest. The rowing "
     "race is won most often by the crew from Saltby."),
    ("The weather", "Winters are mild and wet, and snow falls on about 5 days a year. The storm of January 1953 "
     "flooded the lower streets. Since then a sea wall built by the engineer Clara Dunmore has kept the water out."),
]


def _ordinary_pdf(path):
    from weighted_mtp.clara.pdf import extract_text, render_pdf

    pdf = render_pdf(ORDINARY, path, per_page=2)
    assert len(extract_text(pdf)) == 3
    return pdf


def test_eval_pdf_on_an_ordinary_pdf_default_path_then_edited_questions(stages, tmp_path, monkeypatch, capsys):
    """The default path on a user's PDF: questions from the text itself, written out first, a report
    with every scenario and compression; the questions file edited and passed back."""
    import weighted_mtp.recipes.clara_build as build

    out, _ = stages
    calls = []
    monkeypatch.setenv("WMTP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "train_stages", _fake_train_stages(out, calls))
    pdf = _ordinary_pdf(tmp_path / "town.pdf")
    report = tmp_path / "report"
    assert main(["clara", "eval-pdf", str(pdf), "--output-dir", str(report), "--override", "chunk_max_words=30"]) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert calls and summary["pdf"]["qa_source"] == "cloze" and summary["pdf"]["pages"] == 3
    assert summary["default_model"]["base"] == "smollm2" and "clara-smollm2-" in summary["model"]
    model = Path(summary["model"])  # stages 1-2 only: the query reasoner starts as the compressor
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (model / "adapters" / "query_reasoner" / name).read_bytes() == (
            model / "adapters" / "compressor" / name).read_bytes()
    assert (model / "stage1" / "clara_config.json").is_file()
    lines = (report / "qa_pairs.jsonl").read_text().splitlines()
    assert len(lines) == summary["pdf"]["qa_pairs"] >= 10
    chunks = {c["chunk_id"]: c["text"] for c in map(json.loads, (report / "chunks.jsonl").read_text().splitlines())}
    for pair in map(json.loads, lines):
        assert pair["answer"] in chunks[pair["chunk_id"]] and pair["answer"] not in pair["question"]
    assert {"zero_shot", "rag_top1", "rag_bm25_top1", "oracle_chunk"} == set(summary["scenarios"])
    assert summary["scenarios"]["rag_bm25_top1"]["recall@1"] >= 0.5  # the questions reuse their sentence's words
    assert all(m["n"] == len(lines) for m in summary["scenarios"].values())
    assert summary["compression"]["n"] == len(chunks) and summary["compression"]["compression_ratio"] > 1
    md = (report / "report.md").read_text()
    assert "| zero_shot |" in md and "| rag_top1 |" in md and "| oracle_chunk |" in md and "Compression ratio" in md
    assert "QA pairs (cloze) written to" in capsys.readouterr().out

    edited = tmp_path / "mine.jsonl"
    edited.write_text("\n".join(lines[:3] + ['{"question": "Who designed the lighthouse?", "answer": "Agnes Whitby"}'])
                      + "\n")
    again = tmp_path / "again"
    assert main(["clara", "eval-pdf", str(pdf), "--output-dir", str(again), "--qa", str(edited),
                 "--override", "chunk_max_words=30"]) == 0
    summary = json.loads((again / "summary.json").read_text())
    assert summary["pdf"]["qa_pairs"] == 4 and summary["pdf"]["qa_source"] == f"file {edited}"
    assert summary["scenarios"]["oracle_chunk"]["n"] == 3  # the pair without a chunk has no oracle
    assert len(calls) == 1


def test_eval_pdf_fails_fast_before_any_model_is_built(tmp_path, monkeypatch, capsys):
    import weighted_mtp.recipes.clara_build as build
    from weighted_mtp.clara.pdf import render_pdf

    def no_build(*args, **kwargs):
        raise AssertionError("a model was built before the input was checked")

    monkeypatch.setenv("WMTP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "train_stages", no_build)
    pdf = _ordinary_pdf(tmp_path / "town.pdf")
    dull = render_pdf([("Notes", "The cat sat on the warm mat all day. The dog slept under the old table.")],
                      tmp_path / "dull.pdf")
    bad_qa = tmp_path / "qa.jsonl"
    bad_qa.write_text('{"question": "Who?", "answer": "Agnes Whitby", "chunk_id": "c99"}\n')
    cases = [([str(dull)], "dull.pdf: ClozeQAGenerator found no question in 1 chunks"),
             ([str(pdf), "--qa", str(bad_qa)], "qa.jsonl: pair 1: chunk_id 'c99' is not a chunk of this PDF"),
             ([str(pdf), "--model", str(tmp_path)], "not a CLaRa model directory"),
             ([str(pdf), "--override", "qa.sorce=cloze"], "qa.source"),
             ([str(tmp_path / "missing.pdf")], "PDF file not found")]
    for args, message in cases:
        capsys.readouterr()
        assert main(["clara", "eval-pdf", *args, "--output-dir", str(tmp_path / "out")]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_an_interrupted_stage_resumes_from_its_checkpoint(tiny_base, tmp_path, monkeypatch):
    """SIGTERM in the middle of a stage: the stage stops with its checkpoint and a clear error (not
    a missing-model error in the next stage); the same call then resumes from that checkpoint."""
    import os
    import signal

    from conftest import REPO

    from weighted_mtp.recipes.clara_build import BuildInterrupted, run_stage
    from weighted_mtp.objectives.clara import ClaraObjective

    calls = {"n": 0}
    original = ClaraObjective.__call__

    def stop_at_step_3(self, model, batch, *, training):
        if training:
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # the loop finishes this step, saves, and returns
        return original(self, model, batch, training=training)

    monkeypatch.setattr(ClaraObjective, "__call__", stop_at_step_3)
    overrides = [*TINY, "training.max_steps=4", "training.eval_every=0.0", f"clara.base_model={tiny_base}",
                 "clara.memory_norm=standardize"]  # its statistics must survive the checkpoint too
    run_dir, said = tmp_path / "stage1", []
    with pytest.raises(BuildInterrupted, match=r"clara stage1 stopped by SIGTERM at step 3; its checkpoint .*step_00000003"):
        run_stage(REPO / "configs", "stage1", run_dir, overrides, checkpoints=2, say=said.append)
    assert not (run_dir / "final").exists()
    assert [p.name for p in (run_dir / "checkpoints").glob("step_*")] == ["step_00000003"]  # limit 1: step 2 rotated
    metrics = run_stage(REPO / "configs", "stage1", run_dir, overrides, checkpoints=2, say=said.append)
    assert said == [f"clara stage1: resuming the interrupted run from its checkpoint step_00000003 ({run_dir})"]
    assert metrics["steps"] == 4 and calls["n"] == 4  # one more step, not four
    assert (run_dir / "final" / "clara_config.json").is_file()
    from weighted_mtp.clara.model import ClaraModel

    final = ClaraModel.from_pretrained(run_dir / "final")
    resumed = ClaraModel.from_pretrained(run_dir / "checkpoints" / "step_00000004" / "model") if (
        run_dir / "checkpoints" / "step_00000004").is_dir() else final
    assert final.calibrated and torch.equal(final.mem_mean, resumed.mem_mean) and final.mem_std.min() >= 1e-3
