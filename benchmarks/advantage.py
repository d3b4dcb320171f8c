"""Vectorised GAE advantages (``weighted_mtp.weighting.gae_advantages``) vs the per-token Python
loop the replaced project used: wall time, in the same run, on the same inputs.

The loop is the literal recursion: for each row, walk the tokens backwards, read mask and values
one tensor element at a time, delta_t = gamma * V_t - V_{t-1} (R - V_{T-1} on the last response
token), A_t = delta_t + gamma * lam * A_{t+1}, and write A_t back element by element. Both run in
this process (a time benchmark: no peak-memory comparison, so no subprocess isolation needed).

Threads default to 1: the loop is single-threaded by nature, and ours is a handful of small
matmuls ([B*S/64, 64] x [64, 64]) where intra-op threads only add synchronisation; on a loaded
machine OpenMP threads waiting on each other make that 10-20x slower and very noisy. ``--threads 0``
uses torch's default.

    python benchmarks/advantage.py [--small] [--batch 16] [--seq 2048] [--naive-rows N]

``--naive-rows N`` times the loop on the first N rows only and scales its time by B / N (said so
in the output). The last line is ``ratio_time=<ours/naive> speedup=<naive/ours>``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor

from weighted_mtp.weighting import gae_advantages


def naive_gae(values: Tensor, rewards: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    out = torch.zeros_like(values)
    B, S = values.shape
    for b in range(B):
        a = 0.0
        last = True  # the first response token met walking backwards is the last one
        for t in range(S - 1, -1, -1):
            if not mask[b, t]:
                continue
            v_prev = values[b, t - 1].item() if t > 0 else 0.0
            if last:
                delta = rewards[b].item() - v_prev
                last = False
            else:
                delta = gamma * values[b, t].item() - v_prev
            a = delta + gamma * lam * a
            out[b, t] = a
    return out


def make_inputs(B: int, S: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Prompts of S/16..S/4 tokens, long responses (at least half of S), some padding."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(S // 16, S // 4, (B,), generator=g)
    resp = (S // 2 + torch.rand(B, generator=g) * (S - prompt - S // 2)).long()
    pos = torch.arange(S)[None, :]
    mask = (pos >= prompt[:, None]) & (pos < (prompt + resp)[:, None])
    values = torch.rand(B, S, generator=g)
    rewards = torch.randint(0, 2, (B,), generator=g).float()
    return values, rewards, mask


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="quick run: B=4, S=512")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--lam", type=float, default=0.95)
    p.add_argument("--naive-rows", type=int, default=0, help="time the loop on this many rows and scale (0 = all)")
    p.add_argument("--repeats", type=int, default=20, help="best of this many runs of ours (the loop: best of 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default; see docstring)")
    args = p.parse_args()
    if args.small:
        args.batch, args.seq = 4, 512
    if args.threads:
        torch.set_num_threads(args.threads)
    B, S, gamma, lam = args.batch, args.seq, args.gamma, args.lam
    values, rewards, mask = make_inputs(B, S)
    rows = args.naive_rows if 0 < args.naive_rows < B else B

    ours_fn = lambda: gae_advantages(values, rewards, mask, gamma, lam)  # noqa: E731
    naive_fn = lambda: naive_gae(values[:rows], rewards[:rows], mask[:rows], gamma, lam)  # noqa: E731
    ours_fn()  # warm-up
    t_ours = best_time(ours_fn, args.repeats)
    t_naive = best_time(naive_fn, 3) * B / rows
    diff = (ours_fn()[:rows] - naive_fn()).abs().max().item()

    tokens = int(mask.sum())
    print(
        f"B={B} S={S} response tokens={tokens} (mean {tokens / B:.0f}/row) gamma={gamma} lam={lam} "
        f"threads={torch.get_num_threads()}, ours best of {args.repeats}, loop best of 3"
    )
    if rows < B:
        print(f"loop timed on {rows} of {B} rows, its time scaled by {B / rows:.1f}")
    print(f"max |ours - loop| = {diff:.2e}")
    print(f"{'variant':<8} {'time_s':>10} {'tokens/s':>12}")
    for name, t in (("naive", t_naive), ("ours", t_ours)):
        print(f"{name:<8} {t:>10.5f} {tokens / t:>12.0f}")
    print(f"ratio_time={t_ours / t_naive:.5f} speedup={t_naive / t_ours:.1f}")


if __name__ == "__main__":
    main()
