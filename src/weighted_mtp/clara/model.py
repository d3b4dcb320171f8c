"""CLaRa's model: one frozen HF causal LM, three peft LoRA adapters on it ("compressor",
"generator", "query_reasoner") and l trainable memory embeddings.

The compressor appends the memory embeddings to "<ENC>" BOS doc EOS and keeps the final
(post-norm) hidden states at those l positions: the document's memory [l, d]. The generator
reads a text prompt whose <MEMi> placeholder embeddings are overwritten by memory vectors, so
there is no projector between the two. The query reasoner is the compressor's recipe with its
own adapter; its flattened memory scores documents by cosine.

peft trap handled here: `PeftModel.set_adapter` makes every inactive adapter's weights
requires_grad=False. Autograd skips accumulating into a leaf whose flag is off at backward time,
so a loss that runs the compressor and then switches to the generator would silently give the
compressor no gradient. `use_adapter` therefore re-applies this model's own trainable set after
every switch (`set_trainable` chooses it).

On disk (`save_pretrained`): base/ (the resized HF model + tokenizer), adapters/<name>/ (standard
peft adapter directories), mem_embeddings.safetensors, clara_config.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from weighted_mtp.clara.tokens import add_clara_tokens, clara_tokens, n_memory_tokens
from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.data.collate import pad_token_id
from weighted_mtp.errors import ConfigError, WMTPError
from weighted_mtp.eval.generate import eos_token_ids
from weighted_mtp.files import building_dir
from weighted_mtp.models.load import load_causal_lm, load_tokenizer, resolve_model_path
from weighted_mtp.models.lora import base_layers, read_safetensors

ADAPTERS = ("compressor", "generator", "query_reasoner")
CLARA_CONFIG_FILE = "clara_config.json"
MEM_FILE = "mem_embeddings.safetensors"
BASE_SUBDIR, ADAPTERS_SUBDIR = "base", "adapters"
MEM_STATS = ("mem_mean", "mem_std", "mem_scale")


@dataclass
class ClaraConfig:
    doc_max_length: int = 64
    compression_rate: int = 16
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    generator_max_length: int = 256
    # "standardize": the generator reads (memory - mean) / std * embedding std, with the mean and
    # std of the initial compressor's memory vectors (`calibrate_memory`), fixed from then on. A
    # pretrained LM's final hidden states share a huge common component (SmolLM2: norm 58 against
    # 3.2 for a token embedding, two documents' memories at cosine 1.000), which the generator
    # cannot tell apart; upstream ("none") feeds them raw and trains for far longer than a CPU can.
    memory_norm: str = "none"

    def __post_init__(self) -> None:
        self.n_mem  # validates doc_max_length / compression_rate
        if self.memory_norm not in ("none", "standardize"):
            raise ConfigError(f"clara config: memory_norm must be 'none' or 'standardize', got {self.memory_norm!r}")
        if self.lora_rank < 1 or not 0 <= self.lora_dropout < 1 or self.generator_max_length < 1:
            raise ConfigError(f"clara config: lora_rank {self.lora_rank} must be >= 1, lora_dropout "
                              f"{self.lora_dropout} in [0, 1), generator_max_length {self.generator_max_length} >= 1")

    @property
    def n_mem(self) -> int:
        return n_memory_tokens(self.doc_max_length, self.compression_rate)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> "ClaraConfig":
        try:
            raw = json.loads(Path(path).read_text())
            unknown = sorted(set(raw) - {f.name for f in fields(cls)})
            if unknown:
                raise ValueError(f"unknown keys {unknown}")
            return cls(**raw)
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"{path}: unreadable CLaRa config ({type(e).__name__}: {e})") from e


@dataclass
class CompressOutput:
    memory: Tensor  # [N, l, d]
    mse: Tensor  # scalar: MSE(mean of doc hidden states, mean of memory hidden states)


class ClaraModel(nn.Module):
    def __init__(self, peft_model: nn.Module, tokenizer, cfg: ClaraConfig, mem_embeddings: Tensor,
                 mem_stats: dict[str, Tensor] | None = None):
        super().__init__()
        self.peft = peft_model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.tokens = clara_tokens(tokenizer, cfg.n_mem)
        if tuple(mem_embeddings.shape) != (cfg.n_mem, self.hidden_size):
            raise WMTPError(f"mem_embeddings have shape {tuple(mem_embeddings.shape)}, "
                            f"expected [n_mem={cfg.n_mem}, d={self.hidden_size}]")
        self.mem_embeddings = nn.Parameter(mem_embeddings.to(self.embed.weight.dtype).clone())
        d = self.hidden_size
        stats = mem_stats or {"mem_mean": torch.zeros(d), "mem_std": torch.ones(d), "mem_scale": torch.ones(())}
        for name, value in stats.items():
            self.register_buffer(name, value.float().clone())
        self.calibrated = mem_stats is not None
        # adapter -> {parameter name with the adapter name left out: parameter}
        self._adapter_params: dict[str, dict[str, nn.Parameter]] = {name: {} for name in ADAPTERS}
        for pname, p in self.peft.named_parameters():
            parts = pname.split(".")
            owner = [a for a in ADAPTERS if a in parts]
            if owner and "lora_" in pname:
                self._adapter_params[owner[0]][".".join(x for x in parts if x != owner[0])] = p
        self.set_trainable({"compressor", "generator"}, mem_embeddings=True)
        self.use_adapter("compressor")

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def build(cls, base_dir: str | Path, cfg: ClaraConfig | None = None, *, seed: int = 0) -> "ClaraModel":
        """A fresh CLaRa model on a local HF causal LM (or an `embedded:` spec). Deterministic in
        `seed` (adapters and memory embeddings), and the caller's RNG is left alone."""
        import peft

        cfg = cfg or ClaraConfig()
        path = _base_path(base_dir)
        tokenizer, lm = load_tokenizer(path), load_causal_lm(path)
        old_rows = lm.get_input_embeddings().weight.shape[0]
        add_clara_tokens(tokenizer, cfg.n_mem)
        _resize(lm, len(tokenizer))
        lm.requires_grad_(False)
        emb = lm.get_input_embeddings().weight.detach()[:old_rows]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = peft.get_peft_model(lm, _lora_config(lm, cfg), adapter_name="compressor")
            for name in ADAPTERS[1:]:
                model.add_adapter(name, _lora_config(lm, cfg))
            noise = torch.randn(cfg.n_mem, emb.shape[1], dtype=torch.float32)
        mem = emb.float().mean(0) + 0.1 * emb.float().std(0) * noise  # distinct, yet in embedding range
        return cls(model, tokenizer, cfg, mem)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "ClaraModel":
        from peft import PeftModel

        directory = Path(directory)
        cfg = ClaraConfig.from_file(directory / CLARA_CONFIG_FILE)
        base = directory / BASE_SUBDIR
        tokenizer, lm = load_tokenizer(base), load_causal_lm(base)
        lm.requires_grad_(False)
        adapters = directory / ADAPTERS_SUBDIR
        for name in ADAPTERS:
            if not (adapters / name / "adapter_config.json").is_file():
                raise WMTPError(f"{adapters / name}: missing adapter (no adapter_config.json)")
        model = PeftModel.from_pretrained(lm, adapters / ADAPTERS[0], adapter_name=ADAPTERS[0], is_trainable=True)
        for name in ADAPTERS[1:]:
            model.load_adapter(adapters / name, adapter_name=name, is_trainable=True)
        tensors = read_safetensors(directory / MEM_FILE)
        stats = {k: tensors[k] for k in MEM_STATS if k in tensors} or None
        if cfg.memory_norm == "standardize" and (stats is None or len(stats) != len(MEM_STATS)):
            raise WMTPError(f"{directory / MEM_FILE}: memory_norm is standardize but the file lacks {list(MEM_STATS)}")
        return cls(model, tokenizer, cfg, tensors["mem_embeddings"], stats)

    def save_pretrained(self, directory: str | Path) -> None:
        """Written into a temporary directory beside `directory` and renamed over it, so a crash
        never leaves half a model. Tokenizer files that a caller then writes at the top level
        (the training loop's checkpoint code does) are harmless: loading reads base/."""
        directory = Path(directory)
        with building_dir(directory) as tmp:
            with base_layers(self.lm):  # the HF model without LoRA layers: plain base weight names
                self.lm.save_pretrained(tmp / BASE_SUBDIR, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp / BASE_SUBDIR)
            for name in ADAPTERS:
                pcfg = self.peft.peft_config[name]
                recorded, pcfg.base_model_name_or_path = pcfg.base_model_name_or_path, str(
                    directory.resolve() / BASE_SUBDIR)
                try:  # peft writes a non-"default" adapter into <dir>/<name>/
                    self.peft.save_pretrained(tmp / ADAPTERS_SUBDIR, selected_adapters=[name],
                                              save_embedding_layers=False)
                finally:
                    pcfg.base_model_name_or_path = recorded
            tensors = {"mem_embeddings": self.mem_embeddings.detach().contiguous().cpu()}
            if self.calibrated:
                tensors.update({k: getattr(self, k).detach().contiguous().cpu() for k in MEM_STATS})
            save_file(tensors, tmp / MEM_FILE)
            (tmp / CLARA_CONFIG_FILE).write_text(self.cfg.to_json())

    # ---- parts and adapter switching ---------------------------------------------------------

    @property
    def lm(self) -> nn.Module:
        """The HF causal LM, its linear layers carrying the LoRA adapters in place."""
        return self.peft.get_base_model()

    @property
    def decoder(self) -> nn.Module:
        return self.lm.get_decoder()

    @property
    def embed(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    @property
    def hidden_size(self) -> int:
        return self.embed.weight.shape[1]

    @property
    def device(self) -> torch.device:
        return self.mem_embeddings.device

    def set_trainable(self, adapters: set[str], mem_embeddings: bool) -> None:
        """Stage 1/2: {"compressor", "generator"} + memory; stage 3: {"query_reasoner", "generator"}."""
        unknown = set(adapters) - set(ADAPTERS)
        if unknown:
            raise WMTPError(f"unknown adapters {sorted(unknown)}; known: {', '.join(ADAPTERS)}")
        self._trainable = frozenset(adapters)
        self.mem_embeddings.requires_grad_(mem_embeddings)
        self._apply_trainable()

    def _apply_trainable(self) -> None:
        for name, params in self._adapter_params.items():
            for p in params.values():
                p.requires_grad_(name in self._trainable)

    def use_adapter(self, name: str) -> None:
        """Routes the LoRA layers through adapter `name`; the trainable set is kept (see module doc)."""
        if name not in ADAPTERS:
            raise WMTPError(f"unknown adapter {name!r}; known: {', '.join(ADAPTERS)}")
        self.peft.set_adapter(name)
        self._apply_trainable()

    def init_query_reasoner_from_compressor(self) -> None:
        """Upstream starts the query reasoner as a copy of the trained compressor (paper Table 14)."""
        src, dst = self._adapter_params["compressor"], self._adapter_params["query_reasoner"]
        if {k: p.shape for k, p in src.items()} != {k: p.shape for k, p in dst.items()}:
            raise WMTPError("compressor and query_reasoner adapters differ in layout; cannot copy")
        with torch.no_grad():
            for key, p in src.items():
                dst[key].copy_(p)

    def reset_adapter(self, name: str, seed: int = 0) -> None:
        """peft's fresh init (A random, B zero: the adapter is a no-op again); upstream stage 2
        starts a new generator this way."""
        from peft.tuners.lora import LoraLayer

        self.use_adapter(name)  # validates the name
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            for module in self.peft.modules():
                if isinstance(module, LoraLayer) and name in module.lora_A:
                    module.reset_lora_parameters(name, True)

    @torch.no_grad()
    def calibrate_memory(self, input_ids: Tensor, attention_mask: Tensor) -> None:
        """Fixes the memory statistics that memory_norm "standardize" uses: the per-dimension mean
        and std of the compressor's memory vectors of these documents (encode_texts rows), and the
        std of the token embeddings the generator otherwise reads."""
        memory = self.compress(input_ids, attention_mask).memory.float().reshape(-1, self.hidden_size)
        if memory.shape[0] < 2:
            raise WMTPError("calibrate_memory needs at least two memory vectors")
        self.mem_mean.copy_(memory.mean(0))
        self.mem_std.copy_(memory.std(0).clamp_min(1e-3))
        self.mem_scale.copy_(self.embed.weight.float().std())
        self.calibrated = True

    def read_memory(self, memory: Tensor) -> Tensor:
        """What the generator is given for memory vectors: themselves, or standardised (memory_norm)."""
        if self.cfg.memory_norm == "none":
            return memory
        if not self.calibrated:
            raise WMTPError("memory_norm is standardize but the memory statistics were never calibrated")
        return (memory - self.mem_mean.to(memory)) / self.mem_std.to(memory) * self.mem_scale.to(memory)

    def adapter_parameters(self, name: str) -> dict[str, nn.Parameter]:
        """Adapter `name`'s LoRA tensors, keyed by parameter name without the adapter name."""
        return dict(self._adapter_params[name])

    # ---- forward passes ----------------------------------------------------------------------

    def compress(self, input_ids: Tensor, attention_mask: Tensor, adapter: str = "compressor") -> CompressOutput:
        """Memory [N, l, d] of `encode_texts` rows, and the MSE between the mean hidden state of the
        real (non-padding) text positions and that of the memory positions, in the same pass."""
        self.use_adapter(adapter)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        n, l = input_ids.shape[0], self.cfg.n_mem
        embeds = self.embed(input_ids)
        mem = self.mem_embeddings.to(embeds.dtype).unsqueeze(0).expand(n, -1, -1)
        mask = torch.cat([attention_mask, attention_mask.new_ones(n, l)], dim=1)
        hidden = self.decoder(inputs_embeds=torch.cat([embeds, mem], dim=1), attention_mask=mask,
                              use_cache=False).last_hidden_state
        memory, text = hidden[:, -l:], hidden[:, :-l]
        real = attention_mask.bool().unsqueeze(-1)
        # where(), not a product: fully masked padding rows may hold NaN, and NaN * 0 is NaN.
        text_mean = torch.where(real, text, 0).sum(1) / real.sum(1).clamp_min(1)
        mse = F.mse_loss(text_mean.float(), memory.float().mean(1))
        return CompressOutput(memory=memory, mse=mse)

    def query_vectors(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """[N, l*d]: the query reasoner's memory, flattened as upstream scores it."""
        return self.compress(input_ids, attention_mask, adapter="query_reasoner").memory.flatten(1)

    def generator_inputs(self, input_ids: Tensor, memory: Tensor) -> Tensor:
        """Prompt embeddings with the <MEMi> placeholders overwritten in order: slot j of row b
        gets memory[b, j, 0..l-1]."""
        input_ids, l = input_ids.to(self.device), self.cfg.n_mem
        if memory.dim() != 4 or memory.shape[0] != input_ids.shape[0] or memory.shape[2:] != (l, self.hidden_size):
            raise ValueError(f"memory has shape {tuple(memory.shape)}, expected [B={input_ids.shape[0]}, k, "
                             f"l={l}, d={self.hidden_size}]")
        b, k = memory.shape[:2]
        mem_ids = torch.tensor(self.tokens.mem_ids, device=self.device)
        is_mem = torch.isin(input_ids, mem_ids)
        counts = is_mem.sum(1)
        if (counts != k * l).any():
            raise ValueError(f"memory {tuple(memory.shape)} fills k*l = {k * l} placeholders per row, but the rows "
                             f"of input_ids {tuple(input_ids.shape)} hold {counts.tolist()}")
        if not torch.equal(input_ids[is_mem], mem_ids.repeat(b * k)):
            raise ValueError("placeholders are not in <MEM0>..<MEM{l-1}> order in every slot")
        embeds = self.embed(input_ids)
        memory = self.read_memory(memory)
        return embeds.masked_scatter(is_mem.unsqueeze(-1), memory.to(embeds).reshape(-1, embeds.shape[-1]))

    def generator_loss(self, batch: dict, memory: Tensor) -> Tensor:
        """Mean CE over target tokens; logits are computed for those rows only (no [B, T, V])."""
        embeds = self.generator_inputs(batch["input_ids"], memory)
        self.use_adapter("generator")
        hidden = self.decoder(inputs_embeds=embeds, attention_mask=batch["attention_mask"].to(self.device),
                              use_cache=False).last_hidden_state
        labels = batch["labels"].to(self.device)[:, 1:]
        keep = labels != IGNORE_INDEX
        if not keep.any():
            raise ValueError(f"labels {tuple(batch['labels'].shape)} hold no target token")
        logits = self.lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
        return F.cross_entropy(logits, labels[keep])

    @torch.no_grad()
    def generate(self, batch: dict, memory: Tensor, max_new_tokens: int = 48) -> list[str]:
        """Greedy answers (new text only) for a LEFT-padded `encode_generator(..., targets=None)` batch."""
        from transformers import GenerationConfig

        mask = batch["attention_mask"].to(self.device)
        if (mask[:, -1] == 0).any():
            raise ValueError("generate needs left-padded prompts: use encode_generator(..., targets=None)")
        embeds = self.generator_inputs(batch["input_ids"], memory)
        self.use_adapter("generator")
        eos = eos_token_ids(self.lm, self.tokenizer)
        gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, top_k=50,
                                   top_p=1.0, temperature=1.0, repetition_penalty=1.0, eos_token_id=eos,
                                   pad_token_id=pad_token_id(self.tokenizer), use_cache=True,
                                   suppress_tokens=list(self.tokens.all_ids))  # placeholders are inputs only
        was_training = self.training
        self.eval()
        try:
            out = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=gen_cfg)
        finally:
            self.train(was_training)
        texts = []
        for row in out.tolist():  # with inputs_embeds only, HF returns the new tokens alone
            end = next((i for i, t in enumerate(row) if t in eos), len(row))
            texts.append(self.tokenizer.decode(row[:end], skip_special_tokens=True))
        return texts


def _base_path(spec: str | Path) -> Path:
    if str(spec).startswith("embedded:"):
        return resolve_model_path(str(spec))
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"{spec}: not a local HF model directory (no config.json); hub names are not downloaded")
    return path


def _resize(lm: nn.Module, vocab: int) -> None:
    """Grows the embeddings (and an untied head) to `vocab` rows; new rows are the mean of the
    old ones, deterministically (HF's mean_resizing samples noise). Placeholder rows are
    overwritten before use and never trained; the generator never emits them (suppressed)."""
    old = lm.get_input_embeddings().weight.shape[0]
    if vocab <= old:
        return
    lm.resize_token_embeddings(vocab, mean_resizing=False)
    with torch.no_grad():
        for layer in {id(m): m for m in (lm.get_input_embeddings(), lm.get_output_embeddings()) if m}.values():
            layer.weight[old:] = layer.weight[:old].mean(0)
            if getattr(layer, "bias", None) is not None:
                layer.bias[old:] = layer.bias[:old].mean()


def _lora_config(lm: nn.Module, cfg: ClaraConfig):
    import peft
    from transformers.pytorch_utils import Conv1D

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    # GPT-2's Conv1D stores weights transposed; peft needs to be told (it warns and guesses otherwise).
    fan_in_fan_out = any(isinstance(m, Conv1D) for m in lm.modules())
    return peft.LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                           target_modules=targets, fan_in_fan_out=fan_in_fan_out)
