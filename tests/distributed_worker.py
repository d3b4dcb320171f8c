"""Run under torchrun by tests/test_distributed.py: trains through the one loop (`train()`), then
dumps what the test compares, per rank: the trained parameters (gathered to full tensors when
FSDP2 shards them), the last logged metrics, and the whitening sums of rank-specific data.

usage: torchrun --nproc_per_node N tests/distributed_worker.py CONFIG RUN_DIR OUT_DIR [KEY=VALUE ...]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


def main() -> None:
    config, run_dir, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    overrides = sys.argv[4:]
    # The group belongs to this script, so train() leaves it up for the dumps below.
    dist.init_process_group("gloo")
    from torch.distributed.tensor import DTensor

    from weighted_mtp.config import load_config
    from weighted_mtp.training import loop
    from weighted_mtp.weighting.whitening import _moment_sums

    engines = []
    build = loop.distributed.build_engine

    def capture(*args, **kwargs):
        engines.append(build(*args, **kwargs))
        return engines[-1]

    loop.distributed.build_engine = capture
    result = loop.train(load_config(config, overrides), run_dir, show_progress=False)
    params = {}
    for name, p in engines[-1].module.named_parameters():  # same order on every rank: collectives line up
        full = p.full_tensor() if isinstance(p, DTensor) else p
        params[name] = full.detach().cpu().clone()

    rank = dist.get_rank()
    g = torch.Generator().manual_seed(100 + rank)
    x, mask = torch.randn(3, 7, generator=g), torch.rand(3, 7, generator=g) > 0.3
    sums = _moment_sums(x, mask)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"params": params, "last_train": result.last_train, "last_val": result.last_val,
                "whiten": {"x": x, "mask": mask, "sums": sums}}, out / f"rank_{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
