"""Self-speculative greedy decoding with MTP heads (``weighted_mtp.eval.speculative``) vs plain
cached greedy decoding with head 1 of the same model: tokens/s, acceptance per head and tokens
per verification pass, in the same run, on held-out prompts, outputs checked token for token.

``--model smollm2`` (the default): SmolLM2-135M-Instruct, frozen, with K-1 sequential
(DeepSeek-V3-style) heads trained by `configs/mtp_heads/sequential_smollm2.yaml` (stage
mtp_heads: self-distillation on the model's greedy answers to embedded *training* problems).
The run is cached under ``$WMTP_CACHE/runs`` keyed by its resolved config, and trained first
when missing (deterministic given the config; tens of minutes on 2 busy cores). Prompts are the
chat prompts of held-out embedded *test* problems; decoding stops at EOS or max_new_tokens.
Drafts range over the heads' draft vocabulary (saved with them); verification always uses the
full vocabulary, so the output is plain greedy's.

``--model micro``: the 4-layer micro model trained here for ``--steps`` steps with the MTP loss
(parallel Meta heads by default, ``--head-type sequential`` for DeepSeek-style ones) on the
embedded training solutions; prompts are held-out signature lines. ``--corpus repeated``
trains on 16 solutions and prompts with those (memorised text: the high-acceptance regime).

Both decoders run with the HF KV cache, batch size 1, on the CPU with ``--threads`` threads
(default 2, the cores of this project's machines; nothing else should run). Each prompt is
timed best of ``--repeats`` per variant, the variants interleaved. The table shows drafting
with heads 2..d+1 for every d; the headline (last line) is the draft count chosen *before* the
measurement, by `eval.speculative.tune_drafts` on ``--tune-prompts`` held-out *validation*
prompts, as `wmtp eval --speculative` chooses it.

What sets the speed-up: tokens per pass / (cost of a pass relative to a plain step). A pass is
one LM forward over 1 + drafts tokens plus one block per draft. On a memory-bound accelerator
the extra tokens are nearly free; on this CPU (2 threads, SmolLM2-135M in fp32) a forward over
2 or 3 tokens costs about what one over 1 token does and one over 4 tokens about 1.4x, so a
third draft rarely pays for itself here.

    python benchmarks/speculative.py [--model smollm2|micro] [--prompts 6] [--max-new-tokens 128]
                                     [--repeats 2] [--threads 2] [--tune-prompts 2] [--small]

The last line is ``ratio_tokens_per_s=<spec/plain> drafts=<d> tokens_per_pass=<spec> accept_head2=...``
for the tuned draft count d.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from weighted_mtp.data.embedded import build_embedded_dataset  # noqa: E402
from weighted_mtp.data.records import iter_records  # noqa: E402
from weighted_mtp.eval.speculative import acceptance_by_head, time_decoders, tune_drafts  # noqa: E402
from weighted_mtp.losses.mtp_loss import mtp_cross_entropy  # noqa: E402
from weighted_mtp.models.load import load_tokenizer  # noqa: E402
from weighted_mtp.models.micro import embedded_data_dir, ensure_micro_model  # noqa: E402
from weighted_mtp.models.mtp import MTPModel  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HEADS_CONFIG = REPO / "configs" / "mtp_heads" / "sequential_smollm2.yaml"


# ---- the micro model, trained here ------------------------------------------------------------


def code_stream(tokenizer, records) -> torch.Tensor:
    ids: list[int] = []
    for r in records:
        ids += [tokenizer.bos_token_id, *tokenizer(r.output, add_special_tokens=False)["input_ids"],
                tokenizer.eos_token_id]
    return torch.tensor(ids)


def signature_prompt(code: str) -> str:
    """The solution up to its first ``def`` line, without the newline (a lone "\n" token never
    precedes an indented line in training: BPE merges it with the indentation)."""
    lines = code.split("\n")
    end = next((i for i, line in enumerate(lines) if line.startswith("def ")), 0)
    return "\n".join(lines[: end + 1])


def train(model: MTPModel, stream: torch.Tensor, steps: int, batch: int, seq: int, lr: float) -> torch.Tensor:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    model.train()
    ce = torch.full((model.n_future_tokens,), float("nan"))
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - seq, (batch,), generator=g).tolist()
        x = torch.stack([stream[s:s + seq] for s in starts])
        res = mtp_cross_entropy(model(x).head_hidden, model.unembedding.weight, x)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ce = res.per_head_ce
    model.eval()
    return ce


def micro_setup(args) -> tuple[MTPModel, list[torch.Tensor], list[torch.Tensor], int, str]:
    torch.manual_seed(0)
    model_dir = ensure_micro_model()
    data_dir = embedded_data_dir(0, 2000)
    build_embedded_dataset(data_dir, seed=0, n_problems=2000)
    tokenizer = load_tokenizer(model_dir)
    model = MTPModel.from_pretrained(model_dir, n_future_tokens=args.heads, head_type=args.head_type)
    records = [r for r in iter_records(data_dir / "train.jsonl") if r.is_correct]
    random.Random(0).shuffle(records)
    if args.corpus == "repeated":
        records = list({r.problem_id: r for r in records}.values())[:16]  # one solution per problem
    t0 = time.perf_counter()
    ce = train(model, code_stream(tokenizer, records), args.steps, args.batch, args.seq, args.lr)

    def encoded(source, n: int) -> list[torch.Tensor]:
        seen, prompts = set(), []
        for r in source:  # one prompt per problem: held out, or (repeated) one the model memorised
            if r.is_correct and r.problem_id not in seen:
                seen.add(r.problem_id)
                prompts.append(signature_prompt(r.output))
        return [torch.tensor([[tokenizer.bos_token_id, *tokenizer(p, add_special_tokens=False)["input_ids"]]])
                for p in prompts[:n]]

    repeated = args.corpus == "repeated"
    ids = encoded(records if repeated else iter_records(data_dir / "test.jsonl"), args.prompts)
    tune = (encoded(records[::-1], args.tune_prompts) if repeated
            else encoded(iter_records(data_dir / "valid.jsonl"), args.tune_prompts))
    n_params = sum(p.numel() for p in model.lm.parameters())
    about = (f"micro Llama {n_params / 1e6:.1f}M params in head 1, K={args.heads} {args.head_type} heads, trained "
             f"{args.steps} steps of {args.batch}x{args.seq} tokens in {time.perf_counter() - t0:.1f}s (final CE per "
             f"head: {', '.join(f'{c:.2f}' for c in ce.tolist())}); {len(ids)} "
             f"{'held-out' if args.corpus == 'solutions' else 'memorised'} signature prompts")
    return model, ids, tune, tokenizer.eos_token_id, about


# ---- SmolLM2 with trained sequential heads ------------------------------------------------------


def smollm2_setup(args) -> tuple[MTPModel, list[torch.Tensor], list[torch.Tensor], list[int], str]:
    from weighted_mtp.config import load_config
    from weighted_mtp.eval.generate import eos_token_ids
    from weighted_mtp.eval.prompts import chat_prompt
    from weighted_mtp.training.cached_run import cached_run

    cfg = load_config(args.heads_config, args.override)
    t0 = time.perf_counter()
    run = cached_run(cfg, show_progress=True)
    built = time.perf_counter() - t0
    model = MTPModel.from_pretrained(run / "final").eval()
    tokenizer = load_tokenizer(run / "final")
    data_dir = embedded_data_dir(cfg.dataset.embedded.seed, cfg.dataset.embedded.n_problems)
    build_embedded_dataset(data_dir, seed=cfg.dataset.embedded.seed, n_problems=cfg.dataset.embedded.n_problems)

    def encoded(split: str, n: int) -> list[torch.Tensor]:
        seen, ids = set(), []
        for r in iter_records(data_dir / f"{split}.jsonl"):  # held out: the heads trained on train-split prompts
            if r.problem_id not in seen and len(ids) < n:
                seen.add(r.problem_id)
                ids.append(torch.tensor([tokenizer(chat_prompt(r.instruction, tokenizer),
                                                   add_special_tokens=False)["input_ids"]]))
        return ids

    ids, tune = encoded("test", args.prompts), encoded("valid", args.tune_prompts)
    vocab = "the whole vocabulary" if model.draft_vocab is None else f"a {len(model.draft_vocab)}-token draft vocabulary"
    about = (f"SmolLM2-135M-Instruct (frozen) with {model.n_future_tokens - 1} {model.head_type} heads from {run} "
             f"({'cached' if built < 60 else f'trained in {built:.0f}s'}); drafts over {vocab}; {len(ids)} held-out "
             f"embedded test problems as chat prompts")
    return model, ids, tune, eos_token_ids(model.lm, tokenizer), about


# ---- the measurement ----------------------------------------------------------------------------


def compare(model: MTPModel, prompts: list[torch.Tensor], eos, max_new_tokens: int, repeats: int,
            headline: int) -> None:
    """Plain greedy (d = 0) and every draft count d on each prompt (`time_decoders`: warm-up, then
    best of `repeats`, interleaved); the tuned count `headline` makes the last line."""
    n_heads = model.n_future_tokens - 1
    counts = [0, headline] + [d for d in range(n_heads, 0, -1) if d != headline]  # the tuned count first
    time_s = dict.fromkeys(counts, 0.0)
    forwards = dict.fromkeys(counts, 0)
    accepted: dict[int, list[int]] = {d: [] for d in counts}
    offered: dict[int, list[int]] = {d: [] for d in counts}
    n_tokens, all_same = 0, True
    print(f"{'prompt':>6} {'tokens':>6} {'same':>5} {'plain_s':>8} {'spec_s':>8} {'passes':>7} {'tok/pass':>8}")
    for i, ids in enumerate(prompts):
        timed = time_decoders(model, ids, max_new_tokens, eos, counts, repeats)
        plain = timed[0][1]
        n_tokens += len(plain.tokens)
        same = all(result.tokens == plain.tokens for _, result in timed.values())
        all_same &= same
        for d, (seconds, result) in timed.items():
            time_s[d] += seconds
            forwards[d] += result.n_forward
            accepted[d] += result.accepted_per_step
            offered[d] += result.drafts_per_step
        spent, head = timed[headline]
        print(f"{i:>6} {len(plain.tokens):>6} {str(same):>5} {timed[0][0]:>8.3f} {spent:>8.3f} {head.n_forward:>7} "
              f"{len(head.tokens) / head.n_forward:>8.2f}")

    print(f"outputs identical to plain greedy: {all_same} ({n_tokens} tokens)")
    print(f"{'variant':<9} {'drafts':>6} {'time_s':>8} {'tokens/s':>9} {'passes':>7} {'ms/pass':>8} "
          f"{'tok/pass':>8} {'ratio_tok/s':>11}  acceptance by head (2, 3, ...)")
    tps_plain = n_tokens / time_s[0]
    for d in counts:
        rates = " ".join(f"{r:.1%}" for r in acceptance_by_head(accepted[d], offered[d], d) if r is not None) or "-"
        print(f"{'plain' if d == 0 else f'spec_d{d}':<9} {d:>6} {time_s[d]:>8.3f} {n_tokens / time_s[d]:>9.1f} "
              f"{forwards[d]:>7} {1e3 * time_s[d] / forwards[d]:>8.1f} {n_tokens / forwards[d]:>8.2f} "
              f"{n_tokens / time_s[d] / tps_plain:>11.2f}  {rates}")
    rates = acceptance_by_head(accepted[headline], offered[headline], headline)
    ms_plain, ms_pass = time_s[0] / forwards[0], time_s[headline] / forwards[headline]
    mean_acc = sum(accepted[headline]) / max(len(accepted[headline]), 1)
    print(f"tuned: {headline} of {n_heads} drafts: {mean_acc:.2f} drafts accepted per verification pass, "
          f"{n_tokens / forwards[headline]:.2f} tokens per pass; a pass costs {ms_pass / ms_plain:.2f}x a plain step")
    if not all_same:
        raise SystemExit("self-speculative output differs from plain greedy")
    print(f"ratio_tokens_per_s={n_tokens / time_s[headline] / tps_plain:.2f} drafts={headline} "
          f"tokens_per_pass={n_tokens / forwards[headline]:.2f} "
          + " ".join(f"accept_head{k + 2}={float('nan') if r is None else r:.3f}" for k, r in enumerate(rates)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("smollm2", "micro"), default="smollm2")
    p.add_argument("--small", action="store_true", help="quick run: 2 prompts x 64 tokens (micro: 60 training steps)")
    p.add_argument("--prompts", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2, help="best of this many timed runs per prompt and variant")
    p.add_argument("--tune-prompts", type=int, default=2,
                   help="validation prompts the draft count is chosen on (eval.speculative.tune_drafts)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for decoding (0 = torch default)")
    p.add_argument("--heads-config", default=str(HEADS_CONFIG), help="smollm2: the stage mtp_heads config")
    p.add_argument("--override", action="append", default=[], help="smollm2: config override KEY=VALUE")
    p.add_argument("--heads", type=int, default=4, help="micro: n_future_tokens K (heads 2..K draft)")
    p.add_argument("--head-type", choices=("parallel", "sequential"), default="parallel", help="micro")
    p.add_argument("--corpus", choices=("solutions", "repeated"), default="solutions",
                   help="micro. solutions: all training solutions, held-out prompts; repeated: the first 16 "
                        "training solutions only, prompts from those same problems (memorised text)")
    p.add_argument("--steps", type=int, default=200, help="micro: training steps before decoding")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args()
    if args.small:
        args.steps, args.prompts, args.max_new_tokens = 60, 2, 64
    if args.heads < 2:
        raise SystemExit("--heads must be >= 2: heads 2..K draft")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, prompts, tune, eos, about = (smollm2_setup if args.model == "smollm2" else micro_setup)(args)
    if args.threads:
        torch.set_num_threads(args.threads)  # training may have changed it
    print(about)
    print(f"max_new_tokens={args.max_new_tokens}, stop at EOS, threads={torch.get_num_threads()}, "
          f"best of {args.repeats}, variants interleaved")
    tuning = tune_drafts(model, tune, args.max_new_tokens, eos)
    print(f"draft count tuned on {len(tune)} validation prompts: {tuning.drafts} (tokens/s by count: "
          + ", ".join(f"{d}: {r:.1f}" for d, r in tuning.tokens_per_s.items()) + ")")
    compare(model, prompts, eos, args.max_new_tokens, args.repeats, tuning.drafts)


if __name__ == "__main__":
    main()
