"""CLaRa through the one training loop on a tiny base: the three stages chain, stage 3 leaves the
compressor untouched and trains the query reasoner (unless it is the frozen control), each stage
saves peft-loadable adapters, `wmtp clara validate-data`, and `wmtp clara eval-pdf` end to end on
a real multi-page PDF (and a clear error on a PDF without text)."""

from __future__ import annotations

import json

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
    from weighted_mtp.steper.world import build_world, world_texts

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
    from weighted_mtp.clara.demo import train_stages
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


def test_three_stages_chain_and_stage3_trains_only_reasoner_and_generator(stages):
    out, results = stages
    assert "val/mse" in results["stage1"] and results["stage1"]["val/mse"] >= 0
    assert "val/recall_at_1" in results["stage3"] and 0.0 <= results["stage3"]["val/recall_at_1"] <= 1.0
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

    from weighted_mtp.clara.demo import _run_stage
    from weighted_mtp.clara.model import ClaraConfig

    out, _ = stages
    overrides = [*TINY, "training.max_steps=1", "training.eval_every=0.0", f"clara.init_from={out / 'stage1' / 'final'}",
                 "clara.doc_max_length=64", "clara.compression_rate=4"]  # l = 16 if the config ruled
    _run_stage(REPO / "configs", "stage2", tmp_path / "stage2", overrides)
    saved = ClaraConfig.from_file(tmp_path / "stage2" / "final" / "clara_config.json")
    assert (saved.doc_max_length, saved.compression_rate, saved.n_mem) == (32, 8, 4)


def test_each_stage_adapter_loads_with_peft(stages, tiny_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _ = stages
    final = out / "stage1" / "final"
    base = AutoModelForCausalLM.from_pretrained(final / "base")
    model = PeftModel.from_pretrained(base, final / "adapters" / "generator")
    assert any("lora_A" in n for n, _ in model.named_parameters())


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
    from weighted_mtp.clara.demo import render_world_pdf
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
    from weighted_mtp.clara.demo import render_world_pdf
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


def test_eval_pdf_default_model_is_trained_once_and_measures_compression_with_its_stage1(stages, tmp_path,
                                                                                          monkeypatch):
    import shutil

    import weighted_mtp.clara.demo as demo

    out, _ = stages
    calls = []

    def fake_train_stages(work, configs, overrides, control=True):  # the tiny stages stand in for the real ones
        calls.append(work)
        for name in ("stage1", "stage3"):
            shutil.copytree(out / name / "final", work / name / "final")

    monkeypatch.setenv("WMTP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "train_stages", fake_train_stages)
    pdf = demo.render_world_pdf(tmp_path / "world.pdf", max_docs=8)
    for run in ("first", "second"):
        report = tmp_path / run
        assert main(["clara", "eval-pdf", str(pdf), "--output-dir", str(report), "--override", "max_questions=4"]) == 0
        summary = json.loads((report / "summary.json").read_text())
        default = tmp_path / "cache" / "models"
        assert summary["model"].startswith(str(default)) and "clara-default-" in summary["model"]
        assert summary["compression"]["model"] == summary["model"] + "/stage1"
    assert len(calls) == 1  # cached after the first run
