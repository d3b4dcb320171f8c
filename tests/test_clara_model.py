"""CLaRa tokens and model on a tiny Llama: encodings by hand, the memory/MSE positions, the
placeholder overwrite, which adapters a loss reaches (the peft set_adapter trap), the query
reasoner copy, an exact save/load round trip through standard peft directories, and greedy
generation against a hand-written decoding loop."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from weighted_mtp.clara.model import ADAPTERS, ClaraConfig, ClaraModel
from weighted_mtp.clara.tokens import (add_clara_tokens, clara_tokens, encode_generator, encode_texts,
                                       n_memory_tokens)
from weighted_mtp.data.collate import special_prefix
from weighted_mtp.errors import ConfigError

DOCS = ["Alice was born in Paris in 1950. She works as a painter.",
        "Bob lives in Rome and likes cats.",
        "Carol moved to Oslo in 1987 and teaches music."]
QUESTIONS = ["Where was Alice born?", "What does Bob like?", "What does Carol teach?"]
ANSWERS = ["Paris", "cats", "music"]


def _tokenizer():
    from weighted_mtp.models.micro import train_tokenizer

    return train_tokenizer(DOCS * 5 + QUESTIONS * 5, vocab_size=300)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tokenizer()
    out = tmp_path_factory.mktemp("clara") / "base"
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _model(base_dir, perturb: bool = True, **cfg) -> ClaraModel:
    m = ClaraModel.build(base_dir, ClaraConfig(**{"doc_max_length": 16, "compression_rate": 4, "lora_rank": 4,
                                                 "generator_max_length": 96, **cfg}))
    if perturb:  # lora_B starts at zero, which would hide gradients to lora_A and make adapters equal
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name in ADAPTERS:
                for p in m.adapter_parameters(name).values():
                    p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return m


def _docs(m, texts=DOCS):
    return encode_texts(m.tokenizer, texts, m.cfg.doc_max_length, m.tokens)


def _gen_batch(m, n_docs=1, targets=ANSWERS, questions=QUESTIONS):
    return encode_generator(m.tokenizer, m.tokens, instruction="Answer briefly.", questions=questions,
                            n_docs=n_docs, targets=targets, max_length=m.cfg.generator_max_length)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


# ---- tokens --------------------------------------------------------------------------------


def test_clara_tokens_are_added_once_and_looked_up():
    tok = _tokenizer()
    with pytest.raises(ConfigError, match="lacks the CLaRa tokens"):
        clara_tokens(tok, 4)
    before = len(tok)
    t = add_clara_tokens(tok, 4)
    assert len(tok) == before + 6 and len(set(t.all_ids)) == 6
    assert tok.convert_ids_to_tokens(list(t.all_ids)) == ["<MEM0>", "<MEM1>", "<MEM2>", "<MEM3>", "<ENC>", "<SEP>"]
    assert add_clara_tokens(tok, 4) == t and len(tok) == before + 6  # idempotent
    assert clara_tokens(tok, 4) == t
    assert _ids(tok, "a<MEM1><SEP>b")[1:3] == [t.mem_ids[1], t.sep_id]  # kept whole inside text
    assert tok.decode(list(t.all_ids), skip_special_tokens=True) == ""


def test_n_memory_tokens_follows_compression_rate():
    assert [n_memory_tokens(64, r) for r in (16, 8, 5, 64)] == [4, 8, 12, 1]
    with pytest.raises(ConfigError, match="no memory token"):
        n_memory_tokens(8, 16)
    with pytest.raises(ConfigError, match="compression_rate"):
        n_memory_tokens(64, 0)
    with pytest.raises(ConfigError):
        ClaraConfig(doc_max_length=8, compression_rate=16)


def test_encode_texts_is_enc_bos_doc_eos_left_padded_to_fixed_width():
    tok = _tokenizer()
    t = add_clara_tokens(tok, 2)
    short, long_ = _ids(tok, "Bob"), _ids(tok, DOCS[0])
    assert len(short) < 6 < len(long_)
    out = encode_texts(tok, ["Bob", DOCS[0]], 6, t)
    assert out["input_ids"].shape == out["attention_mask"].shape == (2, 9)
    row0 = [t.enc_id, tok.bos_token_id, *short, tok.eos_token_id]
    pad = 9 - len(row0)
    assert out["input_ids"][0].tolist() == [tok.pad_token_id] * pad + row0
    assert out["attention_mask"][0].tolist() == [0] * pad + [1] * len(row0)
    assert out["input_ids"][1].tolist() == [t.enc_id, tok.bos_token_id, *long_[:6], tok.eos_token_id]
    assert out["attention_mask"][1].tolist() == [1] * 9


def test_encode_generator_template_labels_padding_and_limits():
    tok = _tokenizer()
    t = add_clara_tokens(tok, 2)
    slot = [*t.mem_ids, t.sep_id]
    head = special_prefix(tok) + _ids(tok, "Inst\nBackground:\n")
    prompt_q = head + slot * 2 + _ids(tok, "\n\nQuestion: Who?\nAnswer:")
    prompt_none = head + slot * 2 + _ids(tok, "\nAnswer:")
    target = _ids(tok, " Paris") + [tok.eos_token_id]
    out = encode_generator(tok, t, instruction="Inst", questions=["Who?", None], n_docs=2,
                           targets=["Paris", "x"], max_length=200)
    width = len(prompt_q) + len(target)
    assert out["input_ids"].shape == (2, width)
    assert out["input_ids"][0].tolist() == prompt_q + target
    assert out["labels"][0].tolist() == [-100] * len(prompt_q) + target
    row1 = prompt_none + _ids(tok, " x") + [tok.eos_token_id]  # right padded
    assert out["input_ids"][1, :len(row1)].tolist() == row1
    assert out["attention_mask"][1].tolist() == [1] * len(row1) + [0] * (width - len(row1))
    assert out["labels"][1, len(row1):].tolist() == [-100] * (width - len(row1))

    gen = encode_generator(tok, t, instruction="Inst", questions=["Who?", None], n_docs=2, targets=None, max_length=200)
    assert gen["input_ids"][1].tolist() == [tok.pad_token_id] * (len(prompt_q) - len(prompt_none)) + prompt_none
    assert gen["attention_mask"][0].all() and (gen["labels"] == -100).all()

    per_row = encode_generator(tok, t, instruction=["Inst", "Other"], questions=["Who?", None], n_docs=2,
                               targets=None, max_length=200)
    other = special_prefix(tok) + _ids(tok, "Other\nBackground:\n") + slot * 2 + _ids(tok, "\nAnswer:")
    assert per_row["input_ids"][0].tolist() == prompt_q
    assert per_row["input_ids"][1, -len(other):].tolist() == other
    with pytest.raises(ConfigError, match="2 questions, 1 instructions"):
        encode_generator(tok, t, instruction=["Inst"], questions=["Who?", None], n_docs=2, targets=None, max_length=200)

    zero = encode_generator(tok, t, instruction="Inst", questions=[None], n_docs=0, targets=None, max_length=200)
    assert zero["input_ids"][0].tolist() == head + _ids(tok, "\nAnswer:")

    cut = encode_generator(tok, t, instruction="Inst", questions=["Who?"], n_docs=2, targets=["Paris"],
                           max_length=len(prompt_q) + 1)  # only the first target token fits, no EOS
    assert cut["input_ids"][0].tolist() == prompt_q + target[:1]
    with pytest.raises(ConfigError, match=f"prompt is {len(prompt_q)} tokens.*max_length is {len(prompt_q)}"):
        encode_generator(tok, t, instruction="Inst", questions=["Who?"], n_docs=2, targets=["Paris"],
                         max_length=len(prompt_q))


# ---- model ---------------------------------------------------------------------------------


def test_memory_shape_follows_compression_rate_and_base_is_frozen(base_dir):
    for rate, l in ((16, 4), (8, 8)):
        m = _model(base_dir, perturb=False, doc_max_length=64, compression_rate=rate)
        out = m.compress(**encode_texts(m.tokenizer, DOCS[:2], 64, m.tokens))
        assert out.memory.shape == (2, l, 32) and m.mem_embeddings.shape == (l, 32)
        assert out.mse.dim() == 0 and torch.isfinite(out.memory).all()
        assert m.embed.weight.shape[0] == len(m.tokenizer)
        trainable = {n for n, p in m.named_parameters() if p.requires_grad}
        assert "mem_embeddings" in trainable
        assert all("lora_" in n and (".compressor." in n or ".generator." in n) for n in trainable - {"mem_embeddings"})
        assert not m.embed.weight.requires_grad and not m.lm.get_output_embeddings().weight.requires_grad


def test_mse_and_memory_read_the_right_positions(base_dir, monkeypatch):
    m = _model(base_dir, perturb=False)
    l, d = m.cfg.n_mem, 32
    batch = _docs(m, ["Bob", DOCS[0]])
    mask = batch["attention_mask"]
    assert (mask[0] == 0).any() and mask[1].all()
    hidden = torch.randn(2, mask.shape[1] + l, d, generator=torch.Generator().manual_seed(3))
    hidden[0, :int((mask[0] == 0).sum())] = float("nan")  # padding rows may be garbage
    seen = {}

    def fake_decoder(inputs_embeds, attention_mask, **kw):
        seen["mask"] = attention_mask
        return SimpleNamespace(last_hidden_state=hidden)

    monkeypatch.setattr(ClaraModel, "decoder", property(lambda self: fake_decoder))
    out = m.compress(**batch)
    assert seen["mask"][:, -l:].all() and torch.equal(seen["mask"][:, :-l], mask)
    assert torch.equal(out.memory, hidden[:, -l:])
    total = 0.0
    for b in range(2):
        real = [t for t in range(mask.shape[1]) if mask[b, t]]
        text_mean = sum(hidden[b, t] for t in real) / len(real)
        mem_mean = sum(hidden[b, mask.shape[1] + j] for j in range(l)) / l
        total += ((text_mean - mem_mean) ** 2).sum() / d
    torch.testing.assert_close(out.mse, total / 2)


def test_generator_sees_memory_vectors_in_placeholder_order(base_dir):
    m = _model(base_dir, perturb=False)
    l = m.cfg.n_mem
    batch = _gen_batch(m, n_docs=2)
    memory = torch.randn(3, 2, l, 32)
    seen = {}
    hook = m.decoder.register_forward_pre_hook(lambda mod, a, kw: seen.update(embeds=kw["inputs_embeds"]),
                                               with_kwargs=True)
    try:
        m.generator_loss(batch, memory)
    finally:
        hook.remove()
    ids, plain = batch["input_ids"], m.embed(batch["input_ids"])
    for b in range(3):
        pos = [t for t in range(ids.shape[1]) if int(ids[b, t]) in m.tokens.mem_ids]
        assert len(pos) == 2 * l
        for n, t in enumerate(pos):
            assert int(ids[b, t]) == m.tokens.mem_ids[n % l]
            assert torch.equal(seen["embeds"][b, t], memory[b, n // l, n % l])
        others = [t for t in range(ids.shape[1]) if t not in pos]
        assert torch.equal(seen["embeds"][b, others], plain[b, others])
    with pytest.raises(ValueError, match=rf"k\*l = {l} placeholders.*hold \[{2 * l}, {2 * l}, {2 * l}\]"):
        m.generator_loss(batch, memory[:, :1])
    with pytest.raises(ValueError, match="expected"):
        m.generator_loss(batch, memory[:, :, :1])


def test_generator_loss_equals_full_logits_ce(base_dir):
    m = _model(base_dir)
    batch, memory = _gen_batch(m), torch.randn(3, 1, m.cfg.n_mem, 32)
    loss = m.generator_loss(batch, memory)
    with torch.no_grad():
        embeds = m.generator_inputs(batch["input_ids"], memory)
        ref = m.lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    torch.testing.assert_close(loss.detach(), ref)


def _grads(m, name):
    return [p.grad for p in m.adapter_parameters(name).values()]


def test_stage1_one_loss_reaches_compressor_generator_and_memory(base_dir):
    m = _model(base_dir)  # default trainable set: compressor + generator + memory
    out = m.compress(**_docs(m))
    loss = m.generator_loss(_gen_batch(m, questions=[None] * 3), out.memory.unsqueeze(1)) + 0.1 * out.mse
    # peft's set_adapter("generator") froze the compressor; use_adapter must have re-enabled it
    assert all(p.requires_grad for p in m.adapter_parameters("compressor").values())
    loss.backward()
    for name in ("compressor", "generator"):
        assert all(g is not None and g.abs().sum() > 0 for g in _grads(m, name)), name
    assert all(g is None for g in _grads(m, "query_reasoner"))
    assert m.mem_embeddings.grad is not None and m.mem_embeddings.grad.abs().sum() > 0


def test_stage3_loss_reaches_reasoner_and_generator_only(base_dir):
    m = _model(base_dir)
    m.set_trainable({"query_reasoner", "generator"}, mem_embeddings=False)
    with torch.no_grad():
        docs = m.compress(**_docs(m)).memory  # [D, l, d]
    q = m.query_vectors(**_docs(m, QUESTIONS))  # [B, l*d]
    assert q.shape == (3, m.cfg.n_mem * 32)
    weights = torch.softmax(F.cosine_similarity(q[:, None], docs.flatten(1)[None], dim=-1) / 0.1, dim=-1)
    memory = torch.einsum("bn,nld->bld", weights, docs).unsqueeze(1)
    m.generator_loss(_gen_batch(m), memory).backward()
    for name in ("query_reasoner", "generator"):
        assert all(g is not None and g.abs().sum() > 0 for g in _grads(m, name)), name
    assert all(g is None for g in _grads(m, "compressor"))
    assert m.mem_embeddings.grad is None


def test_query_reasoner_initialised_from_compressor(base_dir):
    m = _model(base_dir)
    batch = _docs(m, QUESTIONS)
    with torch.no_grad():
        ref = m.compress(**batch).memory.flatten(1)
        assert not torch.equal(m.query_vectors(**batch), ref)
        m.init_query_reasoner_from_compressor()
        assert torch.equal(m.query_vectors(**batch), ref)
        assert not torch.equal(m.compress(**batch, adapter="generator").memory.flatten(1), ref)


def test_reset_adapter_makes_it_a_no_op_and_leaves_the_others(base_dir):
    m = _model(base_dir)
    before = {name: {k: p.clone() for k, p in m.adapter_parameters(name).items()} for name in ADAPTERS}
    m.reset_adapter("generator")
    fresh = m.adapter_parameters("generator")
    assert all(not p.any() for k, p in fresh.items() if "lora_B" in k)
    assert all(not torch.equal(p, before["generator"][k]) for k, p in fresh.items() if "lora_A" in k)
    for name in ("compressor", "query_reasoner"):
        assert all(torch.equal(p, before[name][k]) for k, p in m.adapter_parameters(name).items())
    ids = _docs(m)["input_ids"]
    with torch.no_grad(), m.peft.disable_adapter():
        plain = m.lm(input_ids=ids).logits
    with torch.no_grad():
        m.use_adapter("generator")
        assert torch.equal(m.lm(input_ids=ids).logits, plain)


def test_save_load_round_trip_is_exact_and_adapters_are_standard_peft(base_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    m = _model(base_dir)
    with torch.no_grad():
        m.mem_embeddings.add_(1.0)
    out = tmp_path / "ck"
    out.mkdir()
    (out / "stale.txt").write_text("replaced")
    m.save_pretrained(out)
    m.tokenizer.save_pretrained(out)  # what the training loop's checkpoint code does next
    assert not (out / "stale.txt").exists()
    r = ClaraModel.from_pretrained(out)
    assert r.cfg == m.cfg and r.tokens == m.tokens and torch.equal(r.mem_embeddings, m.mem_embeddings)
    docs, batch = _docs(m), _gen_batch(m)
    with torch.no_grad():
        mem_a, mem_b = m.compress(**docs), r.compress(**docs)
        assert torch.equal(mem_a.memory, mem_b.memory) and torch.equal(mem_a.mse, mem_b.mse)
        assert torch.equal(m.query_vectors(**docs), r.query_vectors(**docs))
        memory = mem_a.memory[:, None]
        assert torch.equal(m.generator_loss(batch, memory), r.generator_loss(batch, memory))
        for name in ADAPTERS:  # each adapter directory is a plain peft adapter for base/
            base = AutoModelForCausalLM.from_pretrained(out / "base")
            plain = PeftModel.from_pretrained(base, out / "adapters" / name)
            m.use_adapter(name)
            assert torch.equal(plain(input_ids=docs["input_ids"]).logits, m.lm(input_ids=docs["input_ids"]).logits)


def test_generate_is_greedy_from_injected_memory(base_dir):
    m = _model(base_dir)
    memory = torch.randn(2, 1, m.cfg.n_mem, 32, generator=torch.Generator().manual_seed(5))
    batch = _gen_batch(m, targets=None, questions=QUESTIONS[:2])
    texts = m.generate(batch, memory, max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    one = _gen_batch(m, targets=None, questions=QUESTIONS[:1])  # one row: no padding, same positions
    banned = list(m.tokens.all_ids)
    with torch.no_grad():
        embeds, new = m.generator_inputs(one["input_ids"], memory[:1]), []
        m.use_adapter("generator")
        # Make the CLaRa tokens the unsuppressed argmax (twice the best real token's logit):
        # placeholders are inputs only, generate must never emit them.
        logits = m.lm(inputs_embeds=embeds).logits[0, -1]
        logits[banned] = float("-inf")
        head = m.lm.get_output_embeddings().weight
        assert logits.max() > 0
        head[banned] = 2 * head[int(logits.argmax())]
        for _ in range(4):
            logits = m.lm(inputs_embeds=embeds).logits[0, -1]
            logits[banned] = float("-inf")
            tok = int(logits.argmax())
            if tok == m.tokenizer.eos_token_id:
                break
            new.append(tok)
            embeds = torch.cat([embeds, m.embed(torch.tensor([[tok]]))], dim=1)
    assert m.generate(one, memory[:1], max_new_tokens=4) == [m.tokenizer.decode(new, skip_special_tokens=True)]
    with pytest.raises(ValueError, match="left-padded"):
        m.generate(_gen_batch(m, questions=QUESTIONS[:2], targets=["a", "much longer answer"]), memory)


def test_validation_memory_gain_is_zero_exactly_when_every_row_has_the_same_document(base_dir):
    """`memory_gain` = CE with another row's memory - CE with its own. Identical documents make
    the shuffle a no-op (gain exactly 0); different documents give a model that reads its memory
    a non-zero gain. Training steps do not pay for it."""
    from conftest import REPO

    from weighted_mtp.clara.data import Stage1Example
    from weighted_mtp.config import load_config
    from weighted_mtp.objectives.clara import ClaraCollator, ClaraObjective

    m = _model(base_dir, generator_max_length=256)  # the model's own shapes rule the batches
    cfg = load_config(REPO / "configs" / "clara" / "stage1.yaml")
    objective, collate = ClaraObjective(cfg), ClaraCollator(m.tokenizer, 1, cfg.clara, m.cfg)

    def gain(docs):
        batch = collate([Stage1Example("qa", (q,), (a,), d) for q, a, d in zip(QUESTIONS, ANSWERS, docs)])
        with torch.no_grad():
            return objective(m, batch, training=False).metrics["memory_gain"].item()

    assert gain([DOCS[0]] * 3) == 0.0
    assert abs(gain(DOCS)) > 1e-4
    batch = collate([Stage1Example("qa", (QUESTIONS[0],), (ANSWERS[0],), DOCS[0])] * 2)
    assert "memory_gain" not in objective(m, batch, training=True).metrics


def test_stage3_trainable_sets_and_a_stage3_that_would_train_nothing():
    from conftest import REPO

    from weighted_mtp.config import load_config
    from weighted_mtp.objectives.clara import ClaraObjective

    def trainable(*overrides):
        return ClaraObjective(load_config(REPO / "configs" / "clara" / "stage3.yaml", list(overrides)))._trainable()

    assert trainable() == ({"query_reasoner", "generator"}, False)
    assert trainable("clara.train_query_reasoner=false") == ({"generator"}, False)  # the control
    assert trainable("clara.train_generator=false") == ({"query_reasoner"}, False)
    with pytest.raises(ConfigError, match="train nothing"):
        trainable("clara.train_query_reasoner=false", "clara.train_generator=false")


def test_memory_standardize_by_hand_and_round_trip(base_dir, tmp_path):
    """memory_norm standardize: the statistics are the fresh compressor's memory mean/std per
    dimension and the embeddings' std; the generator's placeholders get (m - mean) / std * scale;
    they are saved and loaded with the model, and "none" leaves the memory as it is."""
    from weighted_mtp.errors import WMTPError

    m = _model(base_dir, memory_norm="standardize")
    enc = encode_texts(m.tokenizer, DOCS, m.cfg.doc_max_length, m.tokens)
    with pytest.raises(WMTPError, match="never calibrated"):
        m.read_memory(torch.zeros(1, 1, m.cfg.n_mem, m.hidden_size))
    m.calibrate_memory(enc["input_ids"], enc["attention_mask"])
    with torch.no_grad():
        mem = m.compress(enc["input_ids"], enc["attention_mask"]).memory.float()
    flat = mem.reshape(-1, m.hidden_size)
    assert torch.allclose(m.mem_mean, flat.mean(0)) and torch.allclose(m.mem_std, flat.std(0).clamp_min(1e-3))
    assert m.mem_scale.item() == pytest.approx(m.embed.weight.float().std().item())
    batch = encode_generator(m.tokenizer, m.tokens, instruction="I", questions=QUESTIONS, n_docs=1, targets=None,
                             max_length=96)
    slots = mem.unsqueeze(1)
    embeds = m.generator_inputs(batch["input_ids"], slots)
    is_mem = torch.isin(batch["input_ids"], torch.tensor(m.tokens.mem_ids))
    expected = ((mem - flat.mean(0)) / flat.std(0).clamp_min(1e-3) * m.embed.weight.float().std()).reshape(-1, m.hidden_size)
    assert torch.allclose(embeds[is_mem].float(), expected, atol=1e-5)
    assert embeds[is_mem].float().std().item() == pytest.approx(m.mem_scale.item(), rel=0.3)  # the embeddings' scale
    m.save_pretrained(tmp_path / "m")
    again = ClaraModel.from_pretrained(tmp_path / "m")
    assert again.cfg.memory_norm == "standardize" and again.calibrated
    assert torch.equal(again.generator_inputs(batch["input_ids"], slots), embeds)
    plain = _model(base_dir)
    assert torch.equal(plain.generator_inputs(batch["input_ids"], slots)[is_mem].float(), mem.reshape(-1, m.hidden_size))
    with pytest.raises(ConfigError, match="memory_norm"):
        ClaraConfig(memory_norm="whiten")
