"""Importing Meta's multi-token-prediction checkpoints: a micro random checkpoint in Meta's exact
on-disk format, imported and loaded with MTPModel, must give the same logits for every head as a
pure-PyTorch reference of Meta's MTP transformer (interleaved complex RoPE, GQA, SwiGLU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from weighted_mtp.errors import WMTPError
from weighted_mtp.models.meta_import import ffn_hidden_size, import_meta_mtp
from weighted_mtp.models.mtp import HEADS_FILE, MTP_CONFIG_FILE, MTPModel

BASE_PARAMS = dict(dim=64, n_layers=5, n_heads=4, n_kv_heads=2, vocab_size=97, multiple_of=32,
                   norm_eps=1e-5, n_future_tokens=3)
ATOL = 1e-4


# ---- reference: Meta's MTP transformer (llama/model.py of facebook/multi-token-prediction) -------


def rms_norm(x, w, eps):
    return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * w


def precompute_freqs_cis(head_dim, end, theta):
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    freqs = torch.outer(torch.arange(end).float(), freqs)
    return torch.polar(torch.ones_like(freqs), freqs)  # complex64 [S, head_dim/2]


def apply_rotary_emb(xq, xk, freqs_cis):
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    fc = freqs_cis.view(1, xq_.shape[1], 1, xq_.shape[-1])
    return (torch.view_as_real(xq_ * fc).flatten(3).type_as(xq),
            torch.view_as_real(xk_ * fc).flatten(3).type_as(xk))


def ref_block(x, sd, prefix, p, freqs_cis, mask):
    B, S, D = x.shape
    nh, nkv = p["n_heads"], p.get("n_kv_heads") or p["n_heads"]
    hd = D // nh
    w = lambda name: sd[f"{prefix}.{name}.weight"]  # noqa: E731
    h = rms_norm(x, w("attention_norm"), p["norm_eps"])
    q = (h @ w("attention.wq").T).view(B, S, nh, hd)
    k = (h @ w("attention.wk").T).view(B, S, nkv, hd)
    v = (h @ w("attention.wv").T).view(B, S, nkv, hd)
    q, k = apply_rotary_emb(q, k, freqs_cis)
    k = k.repeat_interleave(nh // nkv, dim=2)  # repeat_kv
    v = v.repeat_interleave(nh // nkv, dim=2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(2, 3) / math.sqrt(hd) + mask
    att = F.softmax(scores.float(), dim=-1).type_as(q) @ v
    x = x + att.transpose(1, 2).reshape(B, S, D) @ w("attention.wo").T
    h = rms_norm(x, w("ffn_norm"), p["norm_eps"])
    return x + (F.silu(h @ w("feed_forward.w1").T) * (h @ w("feed_forward.w3").T)) @ w("feed_forward.w2").T


def ref_forward(sd, p, tokens):
    """-> logits [B, S, K, V]; trunk = layers[:-1], heads = [layers[-1], *extra_heads]."""
    S = tokens.shape[1]
    K = p["n_future_tokens"]
    n_blocks = p["n_layers"] - K + 1
    freqs_cis = precompute_freqs_cis(p["dim"] // p["n_heads"], S, p.get("rope_theta", 10000.0))
    mask = torch.triu(torch.full((S, S), float("-inf")), diagonal=1)
    h = sd["tok_embeddings.weight"][tokens]
    for i in range(n_blocks - 1):
        h = ref_block(h, sd, f"layers.{i}", p, freqs_cis, mask)
    heads = [f"layers.{n_blocks - 1}"] + [f"extra_heads.{j}" for j in range(K - 1)]
    latents = torch.stack([ref_block(h, sd, name, p, freqs_cis, mask) for name in heads], dim=-2)
    return rms_norm(latents, sd["norm.weight"], p["norm_eps"]) @ sd["output.weight"].T


# ---- micro checkpoint in Meta's format -----------------------------------------------------------


def make_state(p, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    D, V, K = p["dim"], p["vocab_size"], p["n_future_tokens"]
    hd = D // p["n_heads"]
    nkv = p.get("n_kv_heads") or p["n_heads"]
    H = ffn_hidden_size(D, p["multiple_of"], p.get("ffn_dim_multiplier"))
    rnd = lambda *s, scale: torch.randn(*s, generator=g) * scale  # noqa: E731

    def block(prefix):
        return {
            f"{prefix}.attention.wq.weight": rnd(D, D, scale=D ** -0.5),
            f"{prefix}.attention.wk.weight": rnd(nkv * hd, D, scale=D ** -0.5),
            f"{prefix}.attention.wv.weight": rnd(nkv * hd, D, scale=D ** -0.5),
            f"{prefix}.attention.wo.weight": rnd(D, D, scale=D ** -0.5),
            f"{prefix}.feed_forward.w1.weight": rnd(H, D, scale=D ** -0.5),
            f"{prefix}.feed_forward.w2.weight": rnd(D, H, scale=H ** -0.5),
            f"{prefix}.feed_forward.w3.weight": rnd(H, D, scale=D ** -0.5),
            f"{prefix}.attention_norm.weight": 1 + rnd(D, scale=0.1),
            f"{prefix}.ffn_norm.weight": 1 + rnd(D, scale=0.1),
        }

    sd = {"tok_embeddings.weight": rnd(V, D, scale=1.0)}
    for i in range(p["n_layers"] - K + 1):
        sd.update(block(f"layers.{i}"))
    for j in range(K - 1):
        sd.update(block(f"extra_heads.{j}"))
    sd["norm.weight"] = 1 + rnd(D, scale=0.1)
    sd["output.weight"] = rnd(V, D, scale=D ** -0.5 * 3)
    return {k: v.to(dtype) for k, v in sd.items()}


def write_meta(dirpath: Path, p, sd, name="consolidated.pth") -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    (dirpath / "params.json").write_text(json.dumps(p))
    torch.save(sd, dirpath / name)
    return dirpath


def batch(V, B=2, S=10, seed=1):
    return torch.randint(0, V, (B, S), generator=torch.Generator().manual_seed(seed))


VARIANTS = {
    "gqa": BASE_PARAMS,
    "mha_theta_ffnmult": dict(BASE_PARAMS, n_kv_heads=None, rope_theta=500000.0, ffn_dim_multiplier=1.3,
                              n_layers=4, n_future_tokens=2),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def imported(request, tmp_path_factory):
    p = {k: v for k, v in VARIANTS[request.param].items() if v is not None}
    sd = make_state(p)
    if request.param != "gqa":
        sd["rope.freqs"] = torch.zeros(p["dim"] // p["n_heads"] // 2)  # as in some Meta checkpoints; ignored
    root = tmp_path_factory.mktemp(request.param)
    src = write_meta(root / "meta", p, sd)
    out = import_meta_mtp(src, root / "export")
    sd.pop("rope.freqs", None)
    return p, sd, out


def test_every_head_matches_meta_reference(imported):
    p, sd, out = imported
    K = p["n_future_tokens"]
    model = MTPModel.from_pretrained(out).eval()
    assert model.n_future_tokens == K and len(model.extra_heads) == K - 1
    tokens = batch(p["vocab_size"])
    with torch.no_grad():
        ref = ref_forward(sd, p, tokens)
        hidden = model(tokens, torch.ones_like(tokens)).head_hidden
        assert len(hidden) == K
        for k in range(K):
            got = model.head_logits(hidden[k])
            torch.testing.assert_close(got, ref[:, :, k], atol=ATOL, rtol=0, msg=f"head {k + 1}")
    # The heads really differ (so the test could tell them apart).
    assert (ref[:, :, 0] - ref[:, :, K - 1]).abs().max() > 0.1


def test_right_padded_batch_matches_reference_per_sequence(imported):
    p, sd, out = imported
    K = p["n_future_tokens"]
    model = MTPModel.from_pretrained(out).eval()
    tokens = batch(p["vocab_size"], B=2, S=9, seed=3)
    lengths = [9, 5]
    mask = torch.zeros_like(tokens)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        tokens[b, n:] = 0
    with torch.no_grad():
        hidden = model(tokens, mask).head_hidden
        for b, n in enumerate(lengths):
            ref = ref_forward(sd, p, tokens[b : b + 1, :n])
            for k in range(K):
                got = model.head_logits(hidden[k][b : b + 1, :n])
                torch.testing.assert_close(got, ref[:, :, k], atol=ATOL, rtol=0, msg=f"row {b} head {k + 1}")


def test_plain_hf_load_is_head_one(imported):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    p, sd, out = imported
    lm = AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(lm, LlamaForCausalLM)
    assert lm.config.num_hidden_layers == p["n_layers"] - p["n_future_tokens"] + 1
    assert not lm.config.tie_word_embeddings
    tokens = batch(p["vocab_size"], seed=5)
    with torch.no_grad():
        logits = lm(tokens).logits
        ref = ref_forward(sd, p, tokens)[:, :, 0]
    torch.testing.assert_close(logits, ref, atol=ATOL, rtol=0)
    assert json.loads((out / MTP_CONFIG_FILE).read_text())["n_future_tokens"] == p["n_future_tokens"]
    assert (out / HEADS_FILE).is_file()


def test_bf16_checkpoint_stays_bf16_and_dtype_override(tmp_path):
    p = dict(BASE_PARAMS)
    src = write_meta(tmp_path / "meta", p, make_state(p, dtype=torch.bfloat16))
    out = import_meta_mtp(src, tmp_path / "bf16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = MTPModel.from_pretrained(out, dtype=torch.bfloat16)
    assert {t.dtype for t in model.parameters()} == {torch.bfloat16}
    out32 = import_meta_mtp(src, tmp_path / "fp32", dtype="float32")
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(out32 / HEADS_FILE).values()} == {torch.float32}


def test_tokenizer_is_saved_and_config_ids_follow_it(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, 97)}}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    p = dict(BASE_PARAMS)
    src = write_meta(tmp_path / "meta", p, make_state(p))
    out = import_meta_mtp(src, tmp_path / "out", tokenizer=tok)
    loaded = AutoTokenizer.from_pretrained(out)
    assert loaded.eos_token_id == 2 and loaded.bos_token_id == 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["eos_token_id"] == 2 and cfg["bos_token_id"] == 1
    # a tokenizer directory path works too
    out2 = import_meta_mtp(src, tmp_path / "out2", tokenizer=str(out))
    assert AutoTokenizer.from_pretrained(out2).eos_token_id == 2
    big = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(
        {**vocab, **{f"x{i}": 97 + i for i in range(5)}}, unk_token="<unk>")), eos_token="</s>")
    with pytest.raises(WMTPError, match="tokenizer has 102 tokens.*97"):
        import_meta_mtp(src, tmp_path / "out3", tokenizer=big)


# ---- errors ------------------------------------------------------------------------------------


@pytest.fixture()
def good(tmp_path):
    p = dict(BASE_PARAMS)
    return p, make_state(p), tmp_path


def test_missing_key(good):
    p, sd, tmp = good
    del sd["layers.1.feed_forward.w3.weight"]
    src = write_meta(tmp / "meta", p, sd)
    with pytest.raises(WMTPError, match=r"consolidated\.pth.*missing key 'layers\.1\.feed_forward\.w3\.weight'"):
        import_meta_mtp(src, tmp / "out")
    assert not (tmp / "out").exists()


def test_missing_global_key(good):
    p, sd, tmp = good
    del sd["output.weight"]
    src = write_meta(tmp / "meta", p, sd)
    with pytest.raises(WMTPError, match=r"consolidated\.pth.*missing key 'output\.weight'"):
        import_meta_mtp(src, tmp / "out")


def test_unexpected_key(good):
    p, sd, tmp = good
    sd["layers.0.attention.bias"] = torch.zeros(3)
    src = write_meta(tmp / "meta", p, sd)
    with pytest.raises(WMTPError, match=r"consolidated\.pth.*unexpected key 'layers\.0\.attention\.bias'"):
        import_meta_mtp(src, tmp / "out")


def test_inconsistent_n_layers(good):
    p, sd, tmp = good
    src = write_meta(tmp / "meta", dict(p, n_layers=4), sd)
    with pytest.raises(WMTPError, match=r"params\.json: n_layers=4 .*3 'layers\.\*' blocks and 2 'extra_heads"):
        import_meta_mtp(src, tmp / "out")


def test_inconsistent_n_future_tokens(good):
    p, sd, tmp = good
    src = write_meta(tmp / "meta", dict(p, n_future_tokens=4), sd)
    with pytest.raises(WMTPError, match=r"params\.json: n_future_tokens=4 needs 3 extra heads.*has 2"):
        import_meta_mtp(src, tmp / "out")


def test_ffn_size_mismatch(good):
    p, sd, tmp = good
    src = write_meta(tmp / "meta", dict(p, multiple_of=128), sd)
    with pytest.raises(WMTPError, match=r"params\.json: multiple_of=128.*FFN size of 256.*has 192"):
        import_meta_mtp(src, tmp / "out")


def test_wrong_shape(good):
    p, sd, tmp = good
    sd["extra_heads.1.attention.wk.weight"] = torch.zeros(64, 64)  # MHA-sized, params say 2 kv heads
    src = write_meta(tmp / "meta", p, sd)
    with pytest.raises(WMTPError, match=r"consolidated\.pth: key 'extra_heads\.1\.attention\.wk\.weight' has shape"):
        import_meta_mtp(src, tmp / "out")


def test_dim_mismatch_and_missing_params(good):
    p, sd, tmp = good
    src = write_meta(tmp / "meta", dict(p, dim=128), sd)
    with pytest.raises(WMTPError, match=r"params\.json: dim=128"):
        import_meta_mtp(src, tmp / "out")
    (src / "params.json").unlink()
    with pytest.raises(WMTPError, match=r"params\.json: not found"):
        import_meta_mtp(src, tmp / "out")


def test_sharded_checkpoint_is_refused(good):
    p, sd, tmp = good
    src = write_meta(tmp / "meta", p, sd, name="consolidated.00.pth")
    torch.save({}, src / "consolidated.01.pth")
    with pytest.raises(WMTPError, match=r"consolidated\.00\.pth, consolidated\.01\.pth.*single-file"):
        import_meta_mtp(src, tmp / "out")
    (src / "consolidated.01.pth").unlink()
    assert import_meta_mtp(src, tmp / "out").is_dir()  # a lone consolidated.00.pth is fine


def test_not_a_checkpoint(good):
    p, sd, tmp = good
    src = write_meta(tmp / "meta", p, sd)
    (src / "consolidated.pth").write_bytes(b"not a torch file")
    with pytest.raises(WMTPError, match=r"consolidated\.pth: cannot load"):
        import_meta_mtp(src, tmp / "out")


def test_output_is_atomic_and_overwrite_is_explicit(good):
    p, sd, tmp = good
    src = write_meta(tmp / "meta", p, sd)
    out = tmp / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(WMTPError, match="not empty"):
        import_meta_mtp(src, out)
    assert (out / "keep.txt").is_file()
    import_meta_mtp(src, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert sorted(x.name for x in tmp.iterdir()) == ["meta", "out"]  # no temp dirs left behind
    assert (out.stat().st_mode & 0o777) == (tmp / "meta").stat().st_mode & 0o777  # not mkdtemp's 0700


def test_cli_import_meta_and_train_ready(good, capsys):
    from weighted_mtp.cli import main

    p, sd, tmp = good
    src = write_meta(tmp / "meta", p, sd)
    assert main(["models", "import-meta", str(src), str(tmp / "export")]) == 0
    assert "imported" in capsys.readouterr().out
    model = MTPModel.from_pretrained(tmp / "export")
    assert model.n_future_tokens == p["n_future_tokens"]
    del sd["norm.weight"]
    write_meta(tmp / "broken", p, sd)
    assert main(["models", "import-meta", str(tmp / "broken"), str(tmp / "export2")]) == 2
    err = capsys.readouterr().err
    assert "consolidated.pth" in err and "norm.weight" in err
