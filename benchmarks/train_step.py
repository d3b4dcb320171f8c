"""A whole MTP training step (forward, fused chunked loss, backward, AdamW), as `training.compile`
and `training.mixed_precision: bf16` run it, against a plain HF causal-LM step of the same trunk
(`LlamaForCausalLM` with its own loss, the whole model torch.compiled; both with the math
attention `training.compile` uses on CPU), in one run; and the MTP
step's FLOP utilisation against a bf16 matmul peak measured here, in the same run.

Each variant runs in a fresh subprocess. FLOPs are counted, not estimated: one eager step of each
model under `torch.utils.flop_counter.FlopCounterMode` (matmuls and attention, forward and
backward), so the MTP step is charged for its K - 1 extra blocks and its K unembeddings of the
response tokens, and the HF step for its one unembedding of every token. The peak is the best
rate of a square bf16 matmul of a few sizes.

    python benchmarks/train_step.py [--width 512] [--layers 4] [--heads 4] [--vocab 4096]
                                    [--batch 8] [--seq 512] [--steps 5]

The MTP model does more work per token than the LM it wraps ((L - 1 + K) blocks instead of L,
K unembeddings instead of one), so besides tokens/s the table gives each step's achieved FLOP/s;
`ratio_flops_per_s` compares how well each step uses the machine. The last line is
``ratio_tokens_per_s=<mtp/hf> ratio_flops_per_s=<mtp/hf> flop_utilisation=<mtp FLOP/s / peak>``.
"""

from __future__ import annotations

import argparse
import time

from _harness import report, run_worker


def _lm(args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.width, intermediate_size=int(args.width * 2.6875) // 16 * 16,
        num_hidden_layers=args.layers, num_attention_heads=args.width // 64, num_key_value_heads=max(1, args.width // 128),
        max_position_embeddings=max(1024, args.seq), tie_word_embeddings=True))


def _peak(args) -> None:
    import torch

    best = 0.0
    for n in (1024, 2048, 3072):
        a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
        a @ b
        reps = max(2, int(2e10 // (2 * n**3)))
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    report({"flops_per_s": best})


def _step_worker(args) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from weighted_mtp.losses.mtp_loss import mtp_cross_entropy
    from weighted_mtp.models.mtp import MTPModel
    from weighted_mtp.models.compile import compile_blocks, use_math_attention

    lm = _lm(args)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq))
    labels = ids.clone()
    labels[:, : args.seq // 4] = -100  # a prompt, as in SFT
    mask = torch.ones_like(ids)
    if args.worker == "mtp":
        model = MTPModel(lm, args.heads)

        def loss_of(m):
            out = m(ids, mask)
            return mtp_cross_entropy(out.head_hidden, model.unembedding.weight, labels).loss

        compiled = model
    else:
        model = lm

        def loss_of(m):
            return m(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    use_math_attention(model)  # both steps: what training.compile uses on CPU (see models/compile.py)

    def step(m) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_of(m)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    with FlopCounterMode(display=False) as counter:  # eager: the compiled step does the same maths
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_of(model).backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    if args.worker == "mtp":
        compile_blocks(model, math_attention=True)  # what training.compile does on CPU
    else:
        compiled = torch.compile(model, dynamic=True)
    t0 = time.perf_counter()
    step(compiled)
    step(compiled)  # the first steps compile (forward, then backward)
    warmup = time.perf_counter() - t0
    times = sorted(step(compiled) for _ in range(args.steps))
    report({"time": times[len(times) // 2], "best": times[0], "flops": flops, "compile_s": warmup})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4, help="K, the MTP heads (head 1 is the LM's last block)")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--worker", choices=["peak", "hf", "mtp"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "peak":
        return _peak(args)
    if args.worker:
        return _step_worker(args)
    options = {n: getattr(args, n) for n in ("width", "layers", "heads", "vocab", "batch", "seq", "steps")}
    peak = run_worker(__file__, "peak", options)["flops_per_s"]
    results = {v: run_worker(__file__, v, options) for v in ("hf", "mtp")}
    tokens = args.batch * args.seq
    print(f"train step: B={args.batch} S={args.seq} width {args.width}, {args.layers} layers, vocab {args.vocab}, "
          f"K={args.heads}; bf16 autocast, compiled, AdamW; median of {args.steps} steps")
    print(f"measured bf16 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    print(f"{'variant':<8} {'time_s':>8} {'tokens/s':>10} {'GFLOP/step':>11} {'GFLOP/s':>9} {'of peak':>8} {'compile_s':>10}")
    rate = {}
    for name, r in results.items():
        rate[name] = r["flops"] / r["time"]
        print(f"{name:<8} {r['time']:>8.3f} {tokens / r['time']:>10.0f} {r['flops'] / 1e9:>11.2f} "
              f"{rate[name] / 1e9:>9.1f} {rate[name] / peak:>8.1%} {r['compile_s']:>10.1f}")
    ratio_tokens = results["hf"]["time"] / results["mtp"]["time"]
    print(f"ratio_tokens_per_s={ratio_tokens:.3f} ratio_flops_per_s={rate['mtp'] / rate['hf']:.3f} "
          f"flop_utilisation={rate['mtp'] / peak:.3f}")


if __name__ == "__main__":
    main()
