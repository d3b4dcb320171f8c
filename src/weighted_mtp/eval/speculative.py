"""Self-speculative greedy decoding with the MTP heads (Gloeckle et al., 2024, sec. 3.3; blockwise
parallel decoding, Stern et al., 2018).

One forward pass at a time, batch size 1:

* The pass over position t gives head 1's greedy token y (the next token, always kept) and, from
  heads 2..K at the same position, drafts d_2..d_K for the K-1 tokens after y.
* The next pass feeds [y, d_2, ..., d_K] through head 1 (the plain LM) with its KV cache. Head
  1's greedy choice after y is compared with d_2, after d_2 with d_3, and so on: the longest
  agreeing prefix of drafts is accepted, plus head 1's own token at the first disagreement (or
  after the last draft). That token is the new y, and the heads at its position draft again.
* The rejected drafts are cropped from every cache, so the next pass again runs over new tokens
  only.

Every kept token is head 1's greedy choice given the kept tokens before it, so the output is
token for token the plain greedy output of ``model.lm`` (up to floating-point differences
between scoring several positions in one pass and one at a time, which can only matter at an
exact tie); EOS and max_new_tokens are applied to the kept tokens exactly as greedy does.

Parallel heads are full decoder blocks attending over the trunk states of all earlier
positions, so each keeps its own KV cache (a DynamicCache holding the last layer's slot),
fed with the trunk states of exactly the positions the LM's cache holds and cropped with it.
Each pass reuses the last block's call arguments (mask, rotary embeddings, position ids) for
the heads, swapping only the cache, the same way ``MTPModel.forward`` runs the heads.

Sequential heads (DeepSeek-V3) draft one after another from the LM's output at the last
verified position and the token just committed (`eval.sequential_drafter`): the chain runs
between verification passes, one block per draft, as transformers' ``use_mtp=True`` does.

``draft_vocab`` restricts the drafts' argmax to a subset of token ids (verification keeps the
full vocabulary, so the output is unchanged): the heads' share of a step then no longer
includes a full [D, V] unembedding each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from weighted_mtp.errors import WMTPError
from weighted_mtp.eval.generate import causal_lm
from weighted_mtp.eval.sequential_drafter import SequentialDrafter
from weighted_mtp.models.hf_layout import find_layout
from weighted_mtp.models.mtp import MTPModel


@dataclass
class SpeculativeResult:
    tokens: list[int]  # the new tokens (EOS included when it stopped the decode)
    n_forward: int  # forward passes of the LM (the prompt's included)
    accepted_per_step: list[int] = field(default_factory=list)  # drafts accepted by each verification pass
    drafts_per_step: list[int] = field(default_factory=list)  # drafts offered to each verification pass

    @property
    def tokens_per_forward(self) -> float:
        return len(self.tokens) / max(self.n_forward, 1)


def _eos_set(eos_token_id: int | Sequence[int] | None) -> set[int]:
    if eos_token_id is None:
        return set()
    if isinstance(eos_token_id, int):
        return {eos_token_id}
    return {int(e) for e in eos_token_id}


def _check_inputs(input_ids: Tensor, max_new_tokens: int) -> None:
    if input_ids.dim() != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] < 1:
        raise WMTPError(f"input_ids must be [1, S] with S >= 1 (batch size 1), got {tuple(input_ids.shape)}")
    if max_new_tokens < 1:
        raise WMTPError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def _new_cache(lm: nn.Module):
    from transformers import DynamicCache

    cache = DynamicCache(config=lm.config)
    if hasattr(cache, "activate_past_recording"):  # sliding-window layers must survive a crop
        cache.activate_past_recording()
    return cache


def _crop(cache, n_remove: int) -> None:
    if n_remove > 0:
        cache.crop(-n_remove)  # a negative argument removes that many positions


class _EvalMode:
    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.was_training = self.module.training
        self.module.eval()

    def __exit__(self, *exc):
        self.module.train(self.was_training)


@torch.inference_mode()
def greedy_decode(model: nn.Module, input_ids: Tensor, max_new_tokens: int,
                  eos_token_id: int | Sequence[int] | None = None) -> SpeculativeResult:
    """Plain cached greedy decoding with head 1 (``model.lm`` of an MTPModel, or any HF causal
    LM): one forward per new token. The baseline self-speculative decoding must reproduce."""
    _check_inputs(input_ids, max_new_tokens)
    lm = causal_lm(model)
    eos = _eos_set(eos_token_id)
    device = next(lm.parameters()).device
    cache = _new_cache(lm)
    tokens: list[int] = []
    with _EvalMode(lm):
        feed = input_ids.to(device)
        while True:
            logits = lm(input_ids=feed, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
            y = int(logits[0, -1].argmax())
            tokens.append(y)
            if y in eos or len(tokens) == max_new_tokens:
                break
            feed = torch.tensor([[y]], device=device)
    return SpeculativeResult(tokens=tokens, n_forward=len(tokens))


class _MTPStepper:
    """One cached forward of head 1 over new tokens, plus the extra heads over the same
    positions with their own caches."""

    def __init__(self, model, n_heads: int, draft_vocab: Tensor | None = None):
        self.lm = model.lm
        self.heads = list(model.extra_heads)[:n_heads]  # heads not drafting are not run at all
        layout = find_layout(self.lm)
        self.final_norm = layout.final_norm
        self.unembedding = model.unembedding
        weight = model.unembedding.weight
        self.vocab = None if draft_vocab is None else draft_vocab.to(weight.device, torch.long)
        self.draft_weight = weight if self.vocab is None else weight.index_select(0, self.vocab).contiguous()
        self.last_block = layout.layers[-1]
        self.cache = _new_cache(self.lm)
        self.head_caches = [_new_cache(self.lm) for _ in self.heads]
        self._captured: tuple[tuple, dict] | None = None
        self._handle = None

    def __enter__(self):
        self._handle = self.last_block.register_forward_pre_hook(self._capture, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self._handle.remove()

    def _capture(self, module, args, kwargs):
        self._captured = (args, kwargs)

    def forward(self, ids: Tensor, last_logits_only: bool = False) -> tuple[Tensor, list[Tensor]]:
        """ids [1, n] -> head 1's logits [n, V] ([1, V] for the last position only) and each
        extra head's (un-normed) hidden state [n, D]."""
        self._captured = None
        logits = self.lm(input_ids=ids, past_key_values=self.cache, use_cache=True,
                         logits_to_keep=1 if last_logits_only else 0).logits[0]
        if self._captured is None:
            raise WMTPError("the last decoder block was not called; cannot run the MTP heads")
        args, kwargs = self._captured
        self._captured = None
        if args:
            trunk, rest_args, rest_kwargs = args[0], args[1:], dict(kwargs)
        else:
            trunk, rest_args = kwargs["hidden_states"], ()
            rest_kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        # The block gets the LM's cache positionally (GPT-2) or by keyword (Llama): swap it,
        # wherever it is, for each head's own.
        arg_at = [i for i, a in enumerate(rest_args) if a is self.cache]
        kw_at = [k for k, v in rest_kwargs.items() if v is self.cache]
        if not arg_at and not kw_at:
            raise WMTPError(
                f"{type(self.last_block).__name__} is not called with the LM's KV cache; "
                "cannot give the MTP heads their own caches"
            )
        hidden = []
        for head, head_cache in zip(self.heads, self.head_caches):
            args_h = tuple(head_cache if i in arg_at else a for i, a in enumerate(rest_args))
            kwargs_h = {k: head_cache if k in kw_at else v for k, v in rest_kwargs.items()}
            h = head(trunk, *args_h, **kwargs_h)
            hidden.append((h[0] if isinstance(h, tuple) else h)[0])
        return logits, hidden

    def drafts(self, hidden: list[Tensor], position: int, n: int) -> list[int]:
        """The first n extra heads' greedy tokens at one position of the last forward."""
        if n <= 0:
            return []
        h = torch.stack([h[position] for h in hidden[:n]])  # [n, D]: one norm and one unembedding
        if self.vocab is None:
            return self.unembedding(self.final_norm(h)).argmax(-1).tolist()
        return self.vocab[(self.final_norm(h) @ self.draft_weight.t()).argmax(-1)].tolist()

    def crop(self, n_remove: int) -> None:
        for cache in [self.cache, *self.head_caches]:
            _crop(cache, n_remove)


@torch.inference_mode()
def self_speculative_greedy(model, input_ids: Tensor, max_new_tokens: int,
                            eos_token_id: int | Sequence[int] | None = None,
                            max_drafts: int | None = None, draft_vocab: Tensor | None = None,
                            should_stop: Callable[[list[int]], bool] | None = None) -> SpeculativeResult:
    """Greedy decoding of head 1 accelerated by drafting with heads 2..K of an MTPModel
    (parallel or sequential heads); the tokens equal ``greedy_decode``'s.
    ``accepted_per_step[i]`` is the number of drafts the i-th verification pass accepted (each
    pass keeps that many plus one token of head 1) out of ``drafts_per_step[i]``.

    ``max_drafts`` (default K-1) drafts with heads 2..max_drafts+1 only; the others are not
    run. Fewer drafts make each pass cheaper, which pays when the far heads are rarely right.
    ``draft_vocab`` (1-D token ids): drafts are argmaxes over these tokens only; default the
    model's own ``draft_vocab`` (None: the whole vocabulary). ``should_stop(tokens)``, asked
    after every pass, ends the decode early (e.g. a stop sequence appeared); the tokens then
    run a few past where a token-by-token check would have stopped, never fewer."""
    if not isinstance(model, MTPModel):
        raise WMTPError(f"self-speculative decoding needs an MTPModel, got {type(model).__name__}")
    if model.n_future_tokens < 2:
        raise WMTPError(
            f"self-speculative decoding needs extra MTP heads to draft with, but the model has "
            f"n_future_tokens={model.n_future_tokens}; use greedy_decode"
        )
    _check_inputs(input_ids, max_new_tokens)
    n_heads = model.n_future_tokens - 1
    if max_drafts is not None:
        if not 1 <= max_drafts <= n_heads:
            raise WMTPError(f"max_drafts must be in [1, {n_heads}] for a model with {n_heads + 1} heads, got {max_drafts}")
        n_heads = max_drafts
    eos = _eos_set(eos_token_id)
    if draft_vocab is None:
        draft_vocab = getattr(model, "draft_vocab", None)
    if model.head_type == "sequential":
        with _EvalMode(model):
            return _sequential_greedy(model, input_ids, max_new_tokens, eos, n_heads, draft_vocab, should_stop)
    device = next(model.lm.parameters()).device
    tokens: list[int] = []
    accepted: list[int] = []
    offered: list[int] = []
    with _EvalMode(model), _MTPStepper(model, n_heads, draft_vocab) as step:
        logits, hidden = step.forward(input_ids.to(device), last_logits_only=True)
        n_forward = 1
        y = int(logits[-1].argmax())
        tokens.append(y)
        position = -1  # where y was predicted, in the last forward's positions
        done = y in eos or len(tokens) == max_new_tokens or (should_stop is not None and should_stop(tokens))
        while not done:
            # Never draft past max_new_tokens: a pass over [y, drafts] keeps at most len(drafts)+1.
            drafts = step.drafts(hidden, position, min(n_heads, max_new_tokens - len(tokens) - 1))
            logits, hidden = step.forward(torch.tensor([[y, *drafts]], device=device))
            n_forward += 1
            greedy = logits.argmax(-1).tolist()  # greedy[i]: head 1's token after feed[i]
            a = 0
            while a < len(drafts) and drafts[a] == greedy[a]:
                a += 1
            accepted.append(a)
            offered.append(len(drafts))
            step.crop(len(drafts) - a)  # keep y and the accepted drafts
            for t in greedy[: a + 1]:
                tokens.append(t)
                if t in eos or len(tokens) == max_new_tokens:
                    done = True
                    break
            y, position = greedy[a], a
            done = done or (should_stop is not None and should_stop(tokens))
    return SpeculativeResult(tokens=tokens, n_forward=n_forward, accepted_per_step=accepted, drafts_per_step=offered)


def _sequential_greedy(model, input_ids: Tensor, max_new_tokens: int, eos: set[int], n_heads: int,
                       draft_vocab: Tensor | None, should_stop=None) -> SpeculativeResult:
    """The verification loop for sequential heads: a pass over [x_m, drafts] scores them with
    the LM (full vocabulary); the LM's normed outputs at the kept positions feed depth 1."""
    lm = model.lm
    backbone = find_layout(lm).backbone
    device = next(lm.parameters()).device
    cache = _new_cache(lm)
    drafter = SequentialDrafter(model, n_heads, draft_vocab)

    def forward(ids: list[int] | Tensor) -> tuple[Tensor, Tensor]:
        feed = ids if isinstance(ids, Tensor) else torch.tensor([ids], device=device)
        h = backbone(input_ids=feed, past_key_values=cache, use_cache=True).last_hidden_state
        return h, model.unembedding(h[0])

    prompt = input_ids.to(device)
    hidden, logits = forward(prompt)
    committed = prompt[0].tolist()
    tokens = [int(logits[-1].argmax())]
    committed.append(tokens[0])
    n_forward, accepted, offered = 1, [], []
    done = tokens[0] in eos or max_new_tokens == 1 or (should_stop is not None and should_stop(tokens))
    while not done:
        n = min(n_heads, max_new_tokens - len(tokens) - 1)
        drafts = drafter.draft(committed, hidden, n) if n > 0 else []
        hidden, logits = forward([committed[-1], *drafts])
        n_forward += 1
        greedy = logits.argmax(-1).tolist()
        a = 0
        while a < len(drafts) and drafts[a] == greedy[a]:
            a += 1
        accepted.append(a)
        offered.append(len(drafts))
        _crop(cache, len(drafts) - a)
        hidden = hidden[:, : a + 1]  # the LM's outputs at the kept positions: depth 1 reads them
        for t in greedy[: a + 1]:
            tokens.append(t)
            committed.append(t)  # drafts[:a] == greedy[:a], then head 1's own token
            if t in eos or len(tokens) == max_new_tokens:
                done = True
                break
        done = done or (should_stop is not None and should_stop(tokens))
    return SpeculativeResult(tokens=tokens, n_forward=n_forward, accepted_per_step=accepted, drafts_per_step=offered)


@dataclass
class DraftTuning:
    """How many drafts to verify per pass, measured: tokens/s of plain greedy (key 0) and of
    drafting with heads 2..d+1 (key d) on the same tuning prompts."""

    drafts: int
    tokens_per_s: dict[int, float]

    @property
    def speedup(self) -> float:
        return self.tokens_per_s[self.drafts] / self.tokens_per_s[0]


def best_draft_count(tokens_per_s: dict[int, float]) -> int:
    """The draft count (>= 1) with the most tokens/s; a tie goes to fewer drafts (cheaper, and
    less exposed to the far heads' lower acceptance)."""
    counts = sorted(d for d in tokens_per_s if d >= 1)
    if not counts:
        raise WMTPError("no draft count was measured")
    return max(counts, key=lambda d: (tokens_per_s[d], -d))


def acceptance_by_head(accepted: Sequence[int], offered: Sequence[int], n: int) -> list[float | None]:
    """Head k+1's acceptance for k = 1..n: passes that accepted its draft / passes where it was
    checked (offered, and every earlier draft of the pass accepted). None where never checked."""
    out: list[float | None] = []
    for k in range(1, n + 1):
        checked = sum(1 for a, o in zip(accepted, offered) if o >= k and a >= k - 1)
        out.append(sum(1 for a in accepted if a >= k) / checked if checked else None)
    return out


def time_decoders(model, ids: Tensor, max_new_tokens: int, eos_token_id: int | Sequence[int] | None,
                  drafts: Sequence[int], repeats: int = 1) -> dict[int, tuple[float, SpeculativeResult]]:
    """{d: (best seconds, result)} for plain greedy (d = 0) and drafting with d heads, on one
    prompt: one warm-up of each, then `repeats` rounds with the decoders interleaved."""
    def run(d: int) -> SpeculativeResult:
        if d == 0:
            return greedy_decode(model, ids, max_new_tokens, eos_token_id)
        return self_speculative_greedy(model, ids, max_new_tokens, eos_token_id, max_drafts=d)

    for d in drafts:
        run(d)
    best: dict[int, tuple[float, SpeculativeResult]] = {}
    for _ in range(max(1, repeats)):
        for d in drafts:
            t0 = time.perf_counter()
            out = run(d)
            seconds = time.perf_counter() - t0
            if d not in best or seconds < best[d][0]:
                best[d] = (seconds, out)
    return best


def tune_drafts(model, prompts: Sequence[Tensor], max_new_tokens: int,
                eos_token_id: int | Sequence[int] | None = None, repeats: int = 1) -> DraftTuning:
    """Decode `prompts` plainly and with 1..K-1 drafts (`time_decoders`) and keep the draft count
    with the most tokens/s.

    Why measure rather than predict: a verification pass over d+1 tokens costs what the
    hardware makes it cost (on this CPU a 4-token pass costs 1.6x a 3-token one, while 2 and 3
    tokens cost about the same as 1), and the far heads are right less often; which count pays
    depends on both. When the speed-up is itself the measurement, tune on other prompts
    (validation prompts), as benchmarks/speculative.py does."""
    n_heads = model.n_future_tokens - 1
    if n_heads < 1:
        raise WMTPError("tuning drafts needs a model with extra MTP heads")
    counts = range(n_heads + 1)
    seconds = dict.fromkeys(counts, 0.0)
    tokens = 0
    for ids in prompts:
        timed = time_decoders(model, ids, max_new_tokens, eos_token_id, counts, repeats)
        tokens += len(timed[0][1].tokens)  # every decoder gives the same tokens
        for d in counts:
            seconds[d] += timed[d][0]
    rates = {d: tokens / max(s, 1e-9) for d, s in seconds.items()}
    return DraftTuning(best_draft_count(rates), rates)
