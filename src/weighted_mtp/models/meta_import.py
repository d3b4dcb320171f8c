"""Import Meta's multi-token-prediction checkpoints (`facebook/multi-token-prediction`, e.g.
`7B_1T_4`) as an MTP export: an HF `LlamaForCausalLM` directory (head 1) plus the extra heads.

Meta's format is a directory with `params.json` and `consolidated.pth`. Its transformer has
`layers` (n_layers - K + 1 blocks; `n_layers` in params.json counts the extra heads too) and
`extra_heads` (K - 1 blocks). The trunk is `layers[:-1]`; head 1 is `layers[-1]`, head j+2 is
`extra_heads[j]`; every head reads the trunk output and shares `norm` and `output`. That is
exactly `MTPModel` over a Llama whose last decoder block is `layers[-1]`.

Meta's RoPE rotates interleaved pairs (complex numbers) while HF Llama rotates halves, so the
q/k projections are permuted the way transformers' `convert_llama_weights_to_hf.py` does.

Command line (to be wired as `wmtp models import-meta SRC OUT`): `import_meta_mtp(src, out,
tokenizer=PATH_OR_NONE, dtype="auto"|"float32"|"bfloat16", overwrite=False)`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor

from weighted_mtp.errors import WMTPError
from weighted_mtp.files import building_dir
from weighted_mtp.models.mtp import MTPModel

__all__ = ["import_meta_mtp", "permute_rotary", "ffn_hidden_size"]

PARAMS_FILE = "params.json"
IMPORT_INFO_FILE = "meta_import.json"
DEFAULT_MAX_POSITIONS = 4096

# Meta block parameter -> (HF decoder-layer parameter, permutation for RoPE: "q", "k" or None)
_BLOCK_KEYS: dict[str, tuple[str, str | None]] = {
    "attention.wq.weight": ("self_attn.q_proj.weight", "q"),
    "attention.wk.weight": ("self_attn.k_proj.weight", "k"),
    "attention.wv.weight": ("self_attn.v_proj.weight", None),
    "attention.wo.weight": ("self_attn.o_proj.weight", None),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", None),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", None),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", None),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}
_GLOBAL_KEYS = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# Present in some Meta Llama checkpoints: the RoPE frequencies, recomputed from rope_theta.
_IGNORED_KEYS = {"rope.freqs"}
_BLOCK_RE = re.compile(r"^(layers|extra_heads)\.(\d+)\.(.+)$")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def permute_rotary(w: Tensor, n_heads: int) -> Tensor:
    """Meta's interleaved-pair RoPE layout -> HF's rotate_half layout, for a [n_heads*head_dim, dim]
    q or k projection (as in transformers' convert_llama_weights_to_hf.py)."""
    dim1, dim2 = w.shape
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def ffn_hidden_size(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """The SwiGLU hidden size Meta's llama code derives from params.json."""
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def _resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise WMTPError(f"unknown dtype {dtype!r} (choose auto, {', '.join(sorted(_DTYPES))})")


def _read_params(path: Path) -> dict:
    if not path.is_file():
        raise WMTPError(f"{path}: not found; a Meta checkpoint directory has params.json and consolidated.pth")
    try:
        params = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WMTPError(f"{path}: cannot read JSON: {e}") from e
    if not isinstance(params, dict):
        raise WMTPError(f"{path}: expected a JSON object")
    for key in ("dim", "n_layers", "n_heads", "norm_eps"):
        if key not in params:
            raise WMTPError(f"{path}: missing key '{key}'")
    ints = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "n_future_tokens")
    for key in ints:
        v = params.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise WMTPError(f"{path}: key '{key}' must be an integer, got {v!r}")
    for key in ("norm_eps", "rope_theta", "ffn_dim_multiplier"):
        v = params.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise WMTPError(f"{path}: key '{key}' must be a number, got {v!r}")
    return params


def _find_checkpoint(src: Path) -> Path:
    single = src / "consolidated.pth"
    shards = sorted(src.glob("consolidated.*.pth"))
    if single.is_file() and not shards:
        return single
    if not single.is_file() and len(shards) == 1:
        return shards[0]
    if shards:
        names = ", ".join(p.name for p in ([single] if single.is_file() else []) + shards)
        raise WMTPError(
            f"{src}: found {names}; only a single-file checkpoint (consolidated.pth) is supported, "
            "merge model-parallel shards first"
        )
    raise WMTPError(f"{src}: no consolidated.pth")


def _load_state(path: Path) -> dict[str, Tensor]:
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) serialisation cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise WMTPError(f"{path}: cannot load the checkpoint: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise WMTPError(f"{path}: expected a state dict of named tensors")
    return state


def _split_keys(state: dict[str, Tensor], ckpt: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    """-> (layers, extra_heads): block index -> {Meta block key: tensor}; validates names."""
    groups: dict[str, dict[int, dict[str, Tensor]]] = {"layers": {}, "extra_heads": {}}
    for key, tensor in state.items():
        if key in _GLOBAL_KEYS or key in _IGNORED_KEYS:
            continue
        m = _BLOCK_RE.match(key)
        if m is None or m.group(3) not in _BLOCK_KEYS:
            raise WMTPError(f"{ckpt}: unexpected key '{key}' (not part of Meta's MTP transformer)")
        groups[m.group(1)].setdefault(int(m.group(2)), {})[m.group(3)] = tensor
    for key in _GLOBAL_KEYS:
        if key not in state:
            raise WMTPError(f"{ckpt}: missing key '{key}'")
    for name, blocks in groups.items():
        n = max(blocks, default=-1) + 1
        for i in range(n):
            for sub in _BLOCK_KEYS:
                if sub not in blocks.get(i, {}):
                    raise WMTPError(f"{ckpt}: missing key '{name}.{i}.{sub}'")
    if not groups["layers"]:
        raise WMTPError(f"{ckpt}: no 'layers.*' keys; not a Meta llama checkpoint")
    return groups["layers"], groups["extra_heads"]


def _check_shape(ckpt: Path, key: str, t: Tensor, expected: tuple[int, ...]) -> None:
    if tuple(t.shape) != expected:
        raise WMTPError(f"{ckpt}: key '{key}' has shape {list(t.shape)}, expected {list(expected)} from params.json")


def import_meta_mtp(
    src_dir: str | Path,
    out_dir: str | Path,
    tokenizer=None,
    *,
    dtype: torch.dtype | str | None = "auto",
    max_position_embeddings: int = DEFAULT_MAX_POSITIONS,
    overwrite: bool = False,
) -> Path:
    """Convert a Meta MTP checkpoint directory into an MTP export at `out_dir` and return it.

    tokenizer: None, an HF tokenizer object, or a path to an HF tokenizer directory; saved with
    the model. dtype: "auto" keeps the checkpoint's floating dtype (bf16 for Meta's releases).
    The output is built in a temporary directory next to `out_dir` and renamed into place;
    an existing non-empty `out_dir` is an error unless `overwrite`.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    src, out = Path(src_dir).expanduser(), Path(out_dir).expanduser()
    if not src.is_dir():
        raise WMTPError(f"{src}: not a directory (expected a Meta checkpoint with params.json and consolidated.pth)")
    if out.exists() and not out.is_dir():
        raise WMTPError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise WMTPError(f"{out}: exists and is not empty (pass overwrite to replace it)")
    target_dtype = _resolve_dtype(dtype)
    if isinstance(tokenizer, (str, Path)):
        tokenizer = _load_tokenizer(Path(tokenizer).expanduser())

    params_path = src / PARAMS_FILE
    params = _read_params(params_path)
    ckpt = _find_checkpoint(src)
    state = _load_state(ckpt)
    layers, extra = _split_keys(state, ckpt)
    n_blocks, n_extra = len(layers), len(extra)
    k = params.get("n_future_tokens")
    if k is None:
        k = n_extra + 1
    if k < 1 or n_extra != k - 1:
        raise WMTPError(
            f"{params_path}: n_future_tokens={k} needs {max(k - 1, 0)} extra heads, "
            f"but {ckpt.name} has {n_extra} ('extra_heads.*')"
        )
    if params["n_layers"] != n_blocks + n_extra:
        raise WMTPError(
            f"{params_path}: n_layers={params['n_layers']} but {ckpt.name} has {n_blocks} 'layers.*' blocks "
            f"and {n_extra} 'extra_heads.*' blocks (Meta's n_layers counts both: expected {n_blocks + n_extra})"
        )

    # ---- shapes ----------------------------------------------------------------------------
    emb = state["tok_embeddings.weight"]
    if emb.dim() != 2:
        raise WMTPError(f"{ckpt}: key 'tok_embeddings.weight' has shape {list(emb.shape)}, expected [vocab, dim]")
    vocab, dim = emb.shape
    if params["dim"] != dim:
        raise WMTPError(f"{params_path}: dim={params['dim']} but {ckpt.name} 'tok_embeddings.weight' has dim {dim}")
    p_vocab = params.get("vocab_size")
    if p_vocab is not None and p_vocab > 0 and p_vocab != vocab:  # Llama 1/2 params.json say -1
        raise WMTPError(f"{params_path}: vocab_size={p_vocab} but {ckpt.name} 'tok_embeddings.weight' has {vocab} rows")
    n_heads = params["n_heads"]
    n_kv = params.get("n_kv_heads") or n_heads
    if n_heads < 1 or dim % n_heads or n_kv < 1 or n_heads % n_kv or (dim // n_heads) % 2:
        raise WMTPError(f"{params_path}: dim={dim}, n_heads={n_heads}, n_kv_heads={n_kv} do not form valid attention heads")
    head_dim = dim // n_heads
    w1 = layers[0]["feed_forward.w1.weight"]
    hidden = w1.shape[0]
    expected_hidden = ffn_hidden_size(dim, params.get("multiple_of", 256), params.get("ffn_dim_multiplier"))
    if hidden != expected_hidden:
        raise WMTPError(
            f"{params_path}: multiple_of={params.get('multiple_of', 256)}, "
            f"ffn_dim_multiplier={params.get('ffn_dim_multiplier')} give an FFN size of {expected_hidden}, "
            f"but {ckpt.name} 'layers.0.feed_forward.w1.weight' has {hidden}"
        )
    block_shapes = {
        "attention.wq.weight": (n_heads * head_dim, dim),
        "attention.wk.weight": (n_kv * head_dim, dim),
        "attention.wv.weight": (n_kv * head_dim, dim),
        "attention.wo.weight": (dim, n_heads * head_dim),
        "feed_forward.w1.weight": (hidden, dim),
        "feed_forward.w2.weight": (dim, hidden),
        "feed_forward.w3.weight": (hidden, dim),
        "attention_norm.weight": (dim,),
        "ffn_norm.weight": (dim,),
    }
    _check_shape(ckpt, "norm.weight", state["norm.weight"], (dim,))
    _check_shape(ckpt, "output.weight", state["output.weight"], (vocab, dim))
    for name, blocks in (("layers", layers), ("extra_heads", extra)):
        for i, block in blocks.items():
            for sub, t in block.items():
                _check_shape(ckpt, f"{name}.{i}.{sub}", t, block_shapes[sub])

    float_dtypes = {t.dtype for key, t in state.items() if key not in _IGNORED_KEYS}
    if not all(d.is_floating_point for d in float_dtypes):
        raise WMTPError(f"{ckpt}: non-floating tensors ({sorted(map(str, float_dtypes))}); quantised checkpoints are not supported")
    if target_dtype is None:
        target_dtype = emb.dtype if len(float_dtypes) == 1 else torch.float32

    # ---- mapping -----------------------------------------------------------------------------
    seen_storages: set[int] = set()

    def convert(t: Tensor, perm: str | None) -> Tensor:
        t = t.to(target_dtype)
        if perm == "q":
            t = permute_rotary(t, n_heads)
        elif perm == "k":
            t = permute_rotary(t, n_kv)
        t = t.contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen_storages:  # views sharing one storage cannot be saved as safetensors
            t = t.clone()
        seen_storages.add(t.untyped_storage().data_ptr())
        return t

    def block_state(block: dict[str, Tensor]) -> dict[str, Tensor]:
        return {_BLOCK_KEYS[sub][0]: convert(t, _BLOCK_KEYS[sub][1]) for sub, t in block.items()}

    lm_state = {hf: convert(state[meta], None) for meta, hf in _GLOBAL_KEYS.items()}
    for i, block in layers.items():
        lm_state.update({f"model.layers.{i}.{k_}": v for k_, v in block_state(block).items()})
    heads_state = {}
    for j, block in extra.items():
        heads_state.update({f"{j}.{k_}": v for k_, v in block_state(block).items()})

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=dim,
        intermediate_size=hidden,
        num_hidden_layers=n_blocks,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        head_dim=head_dim,
        hidden_act="silu",
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=float(params["norm_eps"]),
        rope_theta=float(params.get("rope_theta") or 10000.0),
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )
    if tokenizer is not None:
        if len(tokenizer) > vocab:
            raise WMTPError(f"the tokenizer has {len(tokenizer)} tokens but {ckpt.name} has a vocabulary of {vocab}")
        for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(tokenizer, attr, None) is not None:
                setattr(config, attr, getattr(tokenizer, attr))

    # Build on the meta device and adopt the checkpoint tensors (assign=True): no random init and
    # no second copy of a 7B model. Non-persistent buffers (RoPE inv_freq) stay on meta; this
    # model is only saved, never run, and loading the export recomputes them.
    with torch.device("meta"):
        lm = LlamaForCausalLM(config)
        model = MTPModel(lm, k)
    _load_into(lm, lm_state, ckpt)
    if k > 1:
        _load_into(model.extra_heads, heads_state, ckpt)
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise WMTPError(f"{ckpt}: no weights for {left[:3]}")
    lm.config.dtype = target_dtype

    with building_dir(out) as tmp:
        model.save_pretrained(tmp, tokenizer=tokenizer)
        info = {"source": str(src.resolve()), "checkpoint": ckpt.name, "params": params,
                "n_future_tokens": k, "dtype": str(target_dtype).removeprefix("torch.")}
        (tmp / IMPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out


def _load_into(module: torch.nn.Module, state: dict[str, Tensor], ckpt: Path) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:  # a mismatch between this mapping and the installed transformers
        raise WMTPError(
            f"{ckpt}: mapped weights do not fit {type(module).__name__}: missing {list(missing)[:3]}, "
            f"unexpected {list(unexpected)[:3]}"
        )


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    if not path.is_dir():
        raise WMTPError(
            f"{path}: the tokenizer must be an HF tokenizer directory (tokenizer.json / tokenizer_config.json); "
            "convert Meta's tokenizer.model first"
        )
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001
        raise WMTPError(f"{path}: cannot load the tokenizer: {type(e).__name__}: {e}") from e
