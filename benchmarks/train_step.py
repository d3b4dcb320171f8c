"""A whole MTP training step (forward, loss, backward, AdamW) with our fused chunked loss vs the
same step with the naive full-logits loss: tokens/s and peak memory, measured in the same run.

The model is a Llama-style MTP model with a realistic 32k vocabulary (hidden 256, 4 layers,
K = 4), so the logits, not the blocks, dominate memory as they do for real models.

    python benchmarks/train_step.py [--batch 8] [--seq 512] [--steps 4]

The last line is ``ratio_peak_memory=<ours/naive> ratio_time=<ours/naive>``.
"""

from __future__ import annotations

import argparse
import time

from _harness import peak_rss_mb, print_comparison, report, rss_mb, run_worker


def _worker(args: argparse.Namespace) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from weighted_mtp.losses.mtp_loss import mtp_cross_entropy
    from weighted_mtp.losses.reference import naive_mtp_cross_entropy
    from weighted_mtp.models.mtp import MTPModel

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=args.vocab, hidden_size=256, intermediate_size=688,
                                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                      tie_word_embeddings=True))
    model = MTPModel(lm, args.heads)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = mtp_cross_entropy if args.worker == "ours" else naive_mtp_cross_entropy
    ids = torch.randint(0, args.vocab, (args.batch, args.seq))
    labels = ids.clone()
    labels[:, : args.seq // 4] = -100  # a prompt, as in SFT

    def step() -> float:
        t0 = time.perf_counter()
        out = model(ids, torch.ones_like(ids))
        loss = loss_fn(out.head_hidden, model.unembedding.weight, labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    step()  # warm-up: thread pools, optimizer state
    base = rss_mb()
    times = [step() for _ in range(args.steps)]
    report({"time": min(times), "peak_mb": peak_rss_mb() - base})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--worker", choices=["ours", "naive"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return _worker(args)
    options = {n: getattr(args, n) for n in ("batch", "seq", "heads", "vocab", "steps")}
    results = {v: run_worker(__file__, v, options) for v in ("naive", "ours")}
    tokens = args.batch * args.seq
    print(f"MTP train step: B={args.batch} S={args.seq} K={args.heads} V={args.vocab}, hidden 256, 4 layers, "
          f"fp32, best of {args.steps}")
    print_comparison(results, tokens, ours="ours")


if __name__ == "__main__":
    main()
