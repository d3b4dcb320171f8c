"""`embedded:micro-code`: the micro Llama, pretrained as a plain causal LM on Python code, built
once and cached. The policy arms fine-tune it; a blank `embedded:micro-llama` never learns, within
the quickstart's budget, to write the function an instruction names (every arm scored pass@1 0.000
on the embedded test problems, its completions ignoring the prompt).

The corpus (`models/code_corpus.py`) holds short functions of the interpreter's own standard
library and commented functions of embedded problems (the training split plus problems drawn
from the same families with other seeds), never a valid or test problem; nothing is downloaded.
Documents are packed into full rows of `seq_len` tokens (BOS document EOS, back to back), so no
step computes on padding, and every batch takes a fixed share of rows from each kind.

The corpus is read in a fixed order and every random choice comes from the recipe's seed, so an
eager build is bit-deterministic for a given interpreter and thread count; compiled kernels
(`compile: true`) are not: two builds on one machine ended at losses 0.907 and 0.887. The cache
holds one build, and every arm of a comparison starts from it. The cache key holds
CODE_BASE_VERSION, the recipe, the Python version, a digest of the corpus and the embedded data's
manifest, so a different standard library or dataset builds a different base.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from weighted_mtp.cache import cache_root, embedded_data_dir
from weighted_mtp.data.collate import ALPACA_PROMPT
from weighted_mtp.data.embedded.build import build_embedded_dataset
from weighted_mtp.files import building_dir
from weighted_mtp.models.code_corpus import (
    extra_problem_documents,
    held_out,
    stdlib_fingerprint,
    stdlib_functions,
    train_instructions,
    train_split_documents,
)
from weighted_mtp.models.compile import can_compile, use_math_attention
from weighted_mtp.models.micro import BOS, EOS, PAD
from weighted_mtp.models.pretrained_heads import save_pretrained_heads, warm_up_heads

CODE_BASE_SPEC = "embedded:micro-code"
CODE_BASE_VERSION = 1
PRETRAINING_FILE = "pretraining.json"


# Narrower than micro-llama (width 128, not 256): 2.3x the tokens per CPU second, and tokens are
# what the base is short of. Measured on the embedded test problems (comment prompts, greedy), the
# test problem's function name was the top-1 next token after "def " for 9% of them after 600k
# tokens, 62% after 1.2M and 85% after 1.8M (pass rate 0.38); a width-256 base given 800k
# tokens still ignored the instruction (3%).
CODE_LLAMA = dict(
    hidden_size=128,
    intermediate_size=344,
    num_hidden_layers=4,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=1024,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)


@dataclass(frozen=True)
class CodeBaseRecipe:
    """Everything that decides the base's weights (all of it is in the cache key)."""

    arch: dict = field(default_factory=lambda: dict(CODE_LLAMA))
    vocab_size: int = 4096
    steps: int = 900
    batch_size: int = 8
    seq_len: int = 256
    learning_rate: float = 5e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    stdlib_fraction: float = 0.125         # share of every batch's rows from the standard library
    extra_problem_seeds: tuple[int, ...] = (1, 2, 3)
    extra_problems_per_seed: int = 2000
    seed: int = 0
    compile: bool = True                   # torch.compile the blocks, where a C++ compiler exists
    bf16: bool = True                      # bf16 autocast (fp32 weights and optimizer state)
    # MTP heads trained on the frozen base after pretraining (`models/pretrained_heads.py`); 0: none.
    # 150 steps kept head 1 at CE 0.22 through the first SFT steps (2.5 with copied heads) and
    # lowered the SFT's final val CE of head 1 (0.188 vs 0.238), but pass@1 after 150 SFT steps
    # was the same within noise (0.265 vs 0.275) for 30% more build time: off by default.
    head_steps: int = 0
    head_learning_rate: float = 5e-3
    n_future_tokens: int = 4


DEFAULT_RECIPE = CodeBaseRecipe()


@dataclass
class Corpus:
    stdlib: list[str]
    problems: list[str]

    def digest(self) -> str:
        h = hashlib.sha256()
        for kind in (self.stdlib, self.problems):
            for doc in kind:
                h.update(doc.encode())
                h.update(b"\0")
            h.update(b"\1")
        return h.hexdigest()[:16]


def build_corpus(data_dir: Path, recipe: CodeBaseRecipe) -> Corpus:
    exclude = held_out(data_dir)
    stdlib = [f for f in stdlib_functions() if not exclude.hides(None, [f])]
    known = train_instructions(data_dir)
    problems = train_split_documents(data_dir, exclude) + extra_problem_documents(
        recipe.extra_problem_seeds, recipe.extra_problems_per_seed, exclude, known)
    return Corpus(stdlib=stdlib, problems=problems)


def pack(docs: list[str], tokenizer, seq_len: int, seed: int) -> torch.Tensor:
    """[n_rows, seq_len] token ids: the documents shuffled with `seed`, each as BOS ids EOS,
    concatenated and cut into full rows (the last partial row is dropped)."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    encoded = tokenizer([docs[i] for i in order], add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    stream = [t for ids in encoded for t in (bos, *ids, eos)]
    n_rows = len(stream) // seq_len
    if n_rows == 0:
        raise ValueError(f"{len(docs)} documents hold {len(stream)} tokens, fewer than one row of {seq_len}")
    return torch.tensor(stream[: n_rows * seq_len], dtype=torch.long).view(n_rows, seq_len)


class RowSampler:
    """Rows of one packed stream in a fresh random order each pass (a seeded generator)."""

    def __init__(self, rows: torch.Tensor, generator: torch.Generator):
        self.rows, self.generator, self.order, self.pos = rows, generator, torch.empty(0, dtype=torch.long), 0

    def take(self, n: int) -> torch.Tensor:
        out = []
        while n > 0:
            if self.pos >= len(self.order):
                self.order, self.pos = torch.randperm(len(self.rows), generator=self.generator), 0
            k = min(n, len(self.order) - self.pos)
            out.append(self.rows[self.order[self.pos:self.pos + k]])
            self.pos, n = self.pos + k, n - k
        return torch.cat(out)


def lr_factor(step: int, recipe: CodeBaseRecipe) -> float:
    """Linear warmup over `warmup_steps`, then cosine down to `min_lr_ratio` at the last step."""
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain(model, stdlib_rows: torch.Tensor, problem_rows: torch.Tensor, recipe: CodeBaseRecipe,
             log: Callable[[int, float], None] | None = None) -> list[float]:
    """Next-token pretraining; every batch holds round(stdlib_fraction * batch_size) stdlib rows
    and the rest problem rows. Returns the loss of every step."""
    generator = torch.Generator().manual_seed(recipe.seed)
    stdlib, problems = RowSampler(stdlib_rows, generator), RowSampler(problem_rows, generator)
    n_std = round(recipe.stdlib_fraction * recipe.batch_size) if len(stdlib_rows) else 0
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=recipe.learning_rate, betas=(0.9, 0.95))
    # Math attention: faster on CPU than the SDPA kernels at these lengths (bf16). The whole model
    # compiled (rows are packed, so one static shape): 1.75x the eager step (13.4k vs 7.7k tokens
    # per CPU second, one thread), where compiling the blocks alone gave 1.03x (the unembedding
    # and its cross-entropy dominate at width 128).
    use_math_attention(model)
    forward = torch.compile(model) if recipe.compile and can_compile() else model
    model.train()
    losses = []
    for step in range(recipe.steps):
        for group in optimizer.param_groups:
            group["lr"] = recipe.learning_rate * lr_factor(step, recipe)
        parts = ([stdlib.take(n_std)] if n_std else []) + [problems.take(recipe.batch_size - n_std)]
        ids = torch.cat(parts)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
            loss = forward(input_ids=ids, labels=ids, use_cache=False).loss  # a KV cache would re-trace
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log is not None:
            log(step, losses[-1])
    model.eval()
    return losses


# Words keep the space that follows them, not the one before (GPT-2's pre-tokenizer does the
# opposite). An identifier then has one spelling wherever it is followed by punctuation: in an
# instruction ("Write `sum_powers(data)` so") and in code ("def sum_powers(data):") the tokens of
# `sum_powers` and `data` are the same, so writing the signature is copying tokens, not learning a
# second spelling of every name (" sum" after "def" but "sum" after a backtick).
PRE_TOKENIZER_PATTERN = r"\w+ ?|[^\w\s]+ ?|\s+"


def train_code_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE (every byte sequence round-trips) over `PRE_TOKENIZER_PATTERN` pieces,
    with BOS added by a post-processor (transformers 5 adds none without one)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def _tokenizer_texts(corpus: Corpus) -> list[str]:
    """The corpus plus the Alpaca template the policy is fine-tuned with, so its boilerplate
    costs a few tokens."""
    template = ALPACA_PROMPT.format(instruction="")
    return corpus.stdlib + corpus.problems + [template] * max(1, len(corpus.problems) // 4)


def cache_key(recipe: CodeBaseRecipe, data_manifest: dict) -> dict:
    """What the base depends on: this module's version, the recipe, the interpreter and its
    standard library's source (fingerprint), and the embedded dataset (its manifest)."""
    return {"v": CODE_BASE_VERSION, "recipe": asdict(recipe), "python": platform.python_version(),
            "torch": torch.__version__, "compiled": recipe.compile and can_compile(),
            "stdlib": stdlib_fingerprint(), "data": data_manifest}


def build_code_base(out_dir: Path, corpus: Corpus, recipe: CodeBaseRecipe, say=print) -> dict:
    """Tokenizer, initial weights (seeded) and pretraining into `out_dir`; returns the summary
    written to `pretraining.json`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    start = time.perf_counter()
    tokenizer = train_code_tokenizer(_tokenizer_texts(corpus), recipe.vocab_size)
    stdlib_rows = pack(corpus.stdlib, tokenizer, recipe.seq_len, recipe.seed) if corpus.stdlib else torch.empty(0)
    problem_rows = pack(corpus.problems, tokenizer, recipe.seq_len, recipe.seed + 1)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **recipe.arch)
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(recipe.seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(rng_state)
    say(f"micro-code base: pretraining {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters for "
        f"{recipe.steps} steps of {recipe.batch_size} x {recipe.seq_len} tokens on {len(corpus.stdlib)} stdlib "
        f"functions ({len(stdlib_rows)} rows) and {len(corpus.problems)} problem functions ({len(problem_rows)} rows)")
    t0 = time.perf_counter()

    def log(step: int, loss: float) -> None:
        if (step + 1) % 50 == 0 or step + 1 == recipe.steps:
            rate = (step + 1) * recipe.batch_size * recipe.seq_len / (time.perf_counter() - t0)
            say(f"  step {step + 1}/{recipe.steps}: loss {loss:.3f}, {rate:,.0f} tokens/s")

    losses = pretrain(model, stdlib_rows, problem_rows, recipe, log)
    train_s, t1 = time.perf_counter() - t0, time.perf_counter()
    head_losses: list[float] = []
    if recipe.head_steps > 0:
        sampler = RowSampler(problem_rows, torch.Generator().manual_seed(recipe.seed + 2))
        mtp, head_losses = warm_up_heads(model, lambda: sampler.take(recipe.batch_size), recipe.n_future_tokens,
                                         recipe.head_steps, recipe.head_learning_rate, recipe.bf16)
        save_pretrained_heads(mtp, out_dir)
    heads_s = time.perf_counter() - t1
    tail = losses[-max(1, len(losses) // 10):]  # the last tenth of the steps
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    summary = {"recipe": asdict(recipe), "python": platform.python_version(), "corpus_digest": corpus.digest(),
               "stdlib_functions": len(corpus.stdlib), "problem_functions": len(corpus.problems),
               "stdlib_rows": len(stdlib_rows), "problem_rows": len(problem_rows),
               "first_loss": losses[0], "last_loss": sum(tail) / len(tail),
               "heads_first_loss": head_losses[0] if head_losses else None,
               "heads_last_loss": head_losses[-1] if head_losses else None,
               "pretrain_seconds": round(train_s, 1), "heads_seconds": round(heads_s, 1), "build_seconds": round(time.perf_counter() - start, 1),
               "tokens_per_s": round(recipe.steps * recipe.batch_size * recipe.seq_len / max(train_s, 1e-9))}
    (out_dir / PRETRAINING_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def ensure_code_base(data_seed: int = 0, n_problems: int = 2000, recipe: CodeBaseRecipe = DEFAULT_RECIPE,
                     say=print) -> Path:
    """The cached base for the embedded dataset (seed, n_problems), built if missing. The build
    goes to a temporary directory renamed into place, so an interrupted build leaves nothing."""
    data_dir = embedded_data_dir(data_seed, n_problems)
    build_embedded_dataset(data_dir, seed=data_seed, n_problems=n_problems)
    key = cache_key(recipe, json.loads((data_dir / "manifest.json").read_text()))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_root() / "models" / f"micro-code-{digest}"
    if (out / "config.json").is_file():
        return out
    say(f"building the code-pretrained micro model (once) into {out}")
    with building_dir(out) as tmp:
        build_code_base(tmp, build_corpus(data_dir, recipe), recipe, say)
    return out
