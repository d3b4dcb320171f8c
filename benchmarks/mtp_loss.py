"""Chunked fused MTP loss vs the naive full-logits reference: peak memory and wall time.

Each variant runs in its own fresh subprocess, because torch's CPU allocations are invisible
to tracemalloc and a process's peak RSS never goes down: sharing a process would let one
variant's peak hide the other's. Peak = max RSS over the runs minus the RSS just before the
first full-size loss call, so inputs, parameters and library start-up (identical for both) are
not counted.

    PYTHONPATH=src python benchmarks/mtp_loss.py [--small] [--chunk-size N] [--threads N]

The last line is ``ratio_peak_memory=<chunked/naive> ratio_time=<chunked/naive>``.
"""

from __future__ import annotations

import argparse
import time

from _harness import peak_rss_mb, print_comparison, report, rss_mb, run_worker


def _worker(args: argparse.Namespace) -> None:
    import torch

    from weighted_mtp.losses.mtp_loss import mtp_cross_entropy
    from weighted_mtp.losses.reference import naive_mtp_cross_entropy

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, S, K, V, D = args.batch, args.seq, args.heads, args.vocab, args.dim
    hidden = [torch.randn(B, S, D).requires_grad_() for _ in range(K)]
    weight = (torch.randn(V, D) * D**-0.5).requires_grad_()
    labels = torch.randint(0, V, (B, S))  # all valid: the chunked loss gets no free skipped rows
    weights = torch.rand(B, S, K)
    fn = mtp_cross_entropy if args.worker == "chunked" else naive_mtp_cross_entropy

    def step() -> float:
        for t in [*hidden, weight]:
            t.grad = None
        t0 = time.perf_counter()
        out = fn(hidden, weight, labels, weights, chunk_size=args.chunk_size)
        out.loss.backward()
        elapsed = time.perf_counter() - t0
        del out
        return elapsed

    # Pay one-time library start-up (thread pools, BLAS buffers) on a tiny problem first, so
    # the measured peak is the loss's own working memory.
    tiny = [torch.randn(1, 16, D, requires_grad=True) for _ in range(K)]
    fn(tiny, torch.randn(64, D, requires_grad=True), torch.randint(0, 64, (1, 16)), chunk_size=8).loss.backward()
    base = rss_mb()
    times = [step() for _ in range(args.repeats + 1)][1:]  # first run is the warm-up
    report({"time": min(times), "peak_mb": peak_rss_mb() - base, "threads": torch.get_num_threads()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="quick run: B=2, S=256, V=8000")
    p.add_argument("--chunk-size", type=int, default=None, help="rows per chunk (default 2048; 512 with --small)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--worker", choices=["chunked", "naive"], help=argparse.SUPPRESS)
    for name, default in [("batch", 4), ("seq", 1024), ("heads", 4), ("vocab", 32000), ("dim", 512)]:
        p.add_argument(f"--{name}", type=int, default=default, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return _worker(args)
    if args.small:
        args.batch, args.seq, args.vocab = 2, 256, 8000
    if args.chunk_size is None:
        args.chunk_size = 512 if args.small else 2048

    results = {}
    options = {n: getattr(args, n) for n in ("chunk_size", "repeats", "threads", "batch", "seq", "heads", "vocab", "dim")}
    for variant in ("naive", "chunked"):
        results[variant] = run_worker(__file__, variant, options)

    tokens = args.batch * args.seq
    print(
        f"B={args.batch} S={args.seq} K={args.heads} V={args.vocab} D={args.dim} fp32 fwd+bwd, "
        f"chunk_size={args.chunk_size}, threads={results['naive']['threads']}, best of {args.repeats}"
    )
    print_comparison(results, tokens, ours="chunked")


if __name__ == "__main__":
    main()
