"""Self-speculative greedy decoding with the MTP heads (``weighted_mtp.eval.speculative``) vs plain
cached greedy decoding with head 1: tokens/s and tokens per forward, in the same run, on the
same prompts, with the outputs checked token for token.

The micro model (4 layers, ~3.4M parameters in head 1) is first trained briefly with the project's
MTP loss (K heads, AdamW) on the embedded data set's correct training solutions: a stream of
``BOS code EOS`` documents cut into fixed windows. Untrained heads would be rejected almost
always; after a couple of hundred steps the model writes code-shaped text and the near heads
agree with head 1 part of the time. Prompts are held-out (test split) problems' signature lines
(``def f(x):``, BOS first); decoding stops at EOS or max_new_tokens. ``--corpus repeated`` trains
on 16 solutions only and prompts with those problems: memorised text, where the heads are
right most of the time (the regime of well-trained heads on predictable text such as code).

Both decoders run with the HF KV cache, batch size 1, on the CPU with ``--threads`` threads
(default 1: the machine may be shared, and at this size extra threads mostly add noise). Each
prompt is timed best of ``--repeats`` per variant, the variants interleaved. Besides drafting
with all K-1 extra heads (the headline), the table shows drafting with heads 2..j+1 only
(``max_drafts=j``; the unused heads are not run).

What to expect at this size: a verification pass runs head 1 (4 blocks + unembedding) over
1 + drafts tokens *and* every drafting head (one block each), so with K=4 a pass does ~7 blocks
of work where a plain step does 4, and per-call overhead dominates either way. The speed-up is
therefore about tokens_per_forward / (cost of a pass relative to a plain step), and it needs
well-trained heads to exceed 1. On large models on a GPU, where a step is memory-bound and
scoring a few extra tokens is nearly free, the same acceptance rate buys much more.

    python benchmarks/speculative.py [--small] [--corpus solutions|repeated] [--heads 4]
                                     [--steps 200] [--prompts 6] [--max-new-tokens 128] [--threads 1]

The last line is ``ratio_tokens_per_s=<spec/plain> mean_tokens_per_forward=<spec>`` for drafting
with all K-1 extra heads.
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from weighted_mtp.data.embedded import build_embedded_dataset  # noqa: E402
from weighted_mtp.data.records import iter_records  # noqa: E402
from weighted_mtp.eval.speculative import greedy_decode, self_speculative_greedy  # noqa: E402
from weighted_mtp.losses.mtp_loss import mtp_cross_entropy  # noqa: E402
from weighted_mtp.models.load import load_tokenizer  # noqa: E402
from weighted_mtp.models.micro import embedded_data_dir, ensure_micro_model  # noqa: E402
from weighted_mtp.models.mtp import MTPModel  # noqa: E402


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


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="quick run: 60 training steps, 3 prompts x 64 tokens")
    p.add_argument("--heads", type=int, default=4, help="n_future_tokens K (heads 2..K draft)")
    p.add_argument("--corpus", choices=("solutions", "repeated"), default="solutions",
                   help="solutions: all training solutions, held-out prompts; repeated: the first 16 "
                        "training solutions only, prompts from those same problems (memorised text, "
                        "the high-acceptance regime)")
    p.add_argument("--steps", type=int, default=200, help="training steps before decoding")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--prompts", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="best of this many timed runs per prompt and variant")
    p.add_argument("--threads", type=int, default=1, help="torch threads for decoding (0 = torch default)")
    args = p.parse_args()
    if args.small:
        args.steps, args.prompts, args.max_new_tokens = 60, 3, 64
    if args.heads < 2:
        raise SystemExit("--heads must be >= 2: heads 2..K draft")

    torch.manual_seed(0)
    model_dir = ensure_micro_model()
    data_dir = embedded_data_dir(0, 2000)
    build_embedded_dataset(data_dir, seed=0, n_problems=2000)
    tokenizer = load_tokenizer(model_dir)
    model = MTPModel.from_pretrained(model_dir, n_future_tokens=args.heads)
    records = [r for r in iter_records(data_dir / "train.jsonl") if r.is_correct]
    random.Random(0).shuffle(records)
    if args.corpus == "repeated":
        records = list({r.problem_id: r for r in records}.values())[:16]  # one solution per problem
    stream = code_stream(tokenizer, records)
    t0 = time.perf_counter()
    ce = train(model, stream, args.steps, args.batch, args.seq, args.lr)
    t_train = time.perf_counter() - t0

    if args.threads:
        torch.set_num_threads(args.threads)
    seen, prompts = set(), []
    source = records if args.corpus == "repeated" else iter_records(data_dir / "test.jsonl")
    for r in source:  # one prompt per problem: held out, or (repeated) one the model memorised
        if r.is_correct and r.problem_id not in seen:
            seen.add(r.problem_id)
            prompts.append(signature_prompt(r.output))
    prompts = prompts[: args.prompts]
    eos = tokenizer.eos_token_id
    n_params = sum(p.numel() for p in model.lm.parameters())
    print(
        f"micro Llama {n_params / 1e6:.1f}M params in head 1, K={args.heads}, trained {args.steps} steps of "
        f"{args.batch}x{args.seq} tokens in {t_train:.1f}s (final CE per head: "
        f"{', '.join(f'{c:.2f}' for c in ce.tolist())})"
    )
    print(
        f"{len(prompts)} {'held-out' if args.corpus == 'solutions' else 'memorised'} signature prompts "
        f"(corpus: {args.corpus}, {len(records)} solutions), max_new_tokens={args.max_new_tokens}, stop at EOS, "
        f"threads={torch.get_num_threads()}, best of {args.repeats}, variants interleaved"
    )

    drafts = list(range(args.heads - 1, 0, -1))  # all extra heads first: the headline
    names = ["plain"] + [f"spec_d{d}" for d in drafts]
    time_s = dict.fromkeys(names, 0.0)
    forwards = dict.fromkeys(names, 0)
    accepted: dict[str, list[int]] = {n: [] for n in names}
    n_tokens = 0
    all_same = True
    print(f"{'prompt':>6} {'tokens':>6} {'same':>5} {'plain_s':>8} {'spec_s':>8} {'fwd_spec':>8} {'tok/fwd':>7}  text")
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]])
        runs = {"plain": lambda: greedy_decode(model, ids, args.max_new_tokens, eos)}
        for d in drafts:
            runs[f"spec_d{d}"] = lambda d=d: self_speculative_greedy(model, ids, args.max_new_tokens, eos, max_drafts=d)
        for fn in runs.values():  # warm-up
            fn()
        best = dict.fromkeys(names, float("inf"))
        results = {}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t, results[name] = timed(fn)
                best[name] = min(best[name], t)
        plain = results["plain"]
        n_tokens += len(plain.tokens)
        for name in names:
            same = results[name].tokens == plain.tokens
            all_same &= same
            time_s[name] += best[name]
            forwards[name] += results[name].n_forward
            accepted[name] += getattr(results[name], "accepted_per_step", [])
        head = results[names[1]]
        text = (prompt + tokenizer.decode(plain.tokens, skip_special_tokens=True)).replace("\n", "\\n")
        print(f"{i:>6} {len(plain.tokens):>6} {str(all(r.tokens == plain.tokens for r in results.values())):>5} "
              f"{best['plain']:>8.3f} {best[names[1]]:>8.3f} {head.n_forward:>8} "
              f"{len(head.tokens) / head.n_forward:>7.2f}  {text[:60]}")

    print(f"outputs identical to plain greedy: {all_same} ({n_tokens} tokens)")
    print(f"{'variant':<9} {'drafts':>6} {'time_s':>8} {'tokens/s':>9} {'forwards':>8} {'ms/fwd':>7} "
          f"{'tok/fwd':>7} {'accept':>7} {'ratio_tok/s':>11}")
    tps_plain = n_tokens / time_s["plain"]
    ms_plain = 1e3 * time_s["plain"] / forwards["plain"]
    for name in names:
        d = 0 if name == "plain" else int(name.split("_d")[1])
        acc = accepted[name]
        rate = f"{sum(acc) / len(acc) / d:>6.1%}" if d and acc else f"{'-':>7}"
        print(f"{name:<9} {d:>6} {time_s[name]:>8.3f} {n_tokens / time_s[name]:>9.1f} {forwards[name]:>8} "
              f"{1e3 * time_s[name] / forwards[name]:>7.2f} {n_tokens / forwards[name]:>7.2f} {rate} "
              f"{n_tokens / time_s[name] / tps_plain:>11.2f}")
    head = names[1]
    mean_acc = sum(accepted[head]) / max(len(accepted[head]), 1)
    ms_head = 1e3 * time_s[head] / forwards[head]
    print(f"all {args.heads - 1} extra heads: {mean_acc:.2f} drafts accepted per verification pass "
          f"(acceptance rate {mean_acc / (args.heads - 1):.1%}); a pass costs {ms_head / ms_plain:.2f}x a plain step")
    if not all_same:
        raise SystemExit("self-speculative output differs from plain greedy")
    print(f"ratio_tokens_per_s={n_tokens / time_s[head] / tps_plain:.2f} "
          f"mean_tokens_per_forward={n_tokens / forwards[head]:.2f}")


if __name__ == "__main__":
    main()
