"""The teacher that writes StepER trajectories, one reasoning sentence per call: a local HF
causal LM, any OpenAI-compatible chat server (vLLM, llama.cpp, TGI), or the synthetic world
teacher of the tests. Every teacher sees the same messages and returns only the first sentence
of its reply, cut by `prompts.first_sentence`, so trajectories follow one format whoever wrote them.
The HF and OpenAI teachers also `chat`: the whole reply to any messages (CLaRa's QA pairs)."""

from __future__ import annotations

import inspect
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

from weighted_mtp.data.collate import special_prefix
from weighted_mtp.errors import ConfigError, WMTPError
from weighted_mtp.eval.generate import GenerationConfig, generate
from weighted_mtp.models.load import DTYPES, load_causal_lm, load_tokenizer
from weighted_mtp.world.prompts import ANSWER_MARKER, StepQuery, context, first_sentence, join_reasoning
from weighted_mtp.world.teacher import WorldTeacher

SYSTEM_PROMPT = (
    "You answer multi-hop questions by reasoning over the given passages, one sentence per turn. "
    "Each turn, write exactly one new sentence that continues the reasoning so far with one fact "
    "from the passages. When the reasoning is enough to answer, write only the final sentence "
    f"\"{ANSWER_MARKER} <answer>.\" with a short answer (an entity, a date, a number, yes or no)."
)


@runtime_checkable
class Teacher(Protocol):
    def step(self, queries: Sequence[StepQuery]) -> list[str]:
        """The next reasoning sentence for each query, in order."""
        ...


def teacher_messages(query: StepQuery) -> list[dict]:
    reasoning = join_reasoning(query.reasoning) or "(none yet)"
    user = (f"Passages:\n{context(query.passages)}\n\nQuestion: {query.question}\n\n"
            f"Reasoning so far: {reasoning}\n\nNext sentence:")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def teacher_prompt(query: StepQuery, tokenizer: Any = None) -> str:
    """The messages as one prompt: the tokenizer's chat template (with the assistant turn opened)
    when it has one, else plain text that ends at "Next sentence:" for the model to continue."""
    return chat_prompt(teacher_messages(query), tokenizer)


def chat_prompt(messages: list[dict], tokenizer: Any = None) -> str:
    """Any chat as one prompt, as `teacher_prompt` builds it: the chat template when the
    tokenizer has one, else the message contents separated by blank lines."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return "\n\n".join(m["content"] for m in messages)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # `generate` puts the tokenizer's own prefix (BOS) in front of every prompt; a template that
    # writes BOS itself would otherwise give the model two.
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and special_prefix(tokenizer):
        text = text[len(bos):]
    return text


class HFTeacher:
    """A local HF causal-LM directory, decoded greedily in batches (`step`: up to the first newline)."""

    def __init__(self, model_dir: str | Path, max_new_tokens: int = 64, batch_size: int = 8,
                 dtype: str = "float32", device: str | None = None):
        import torch

        if dtype not in DTYPES:
            raise ConfigError(f"teacher dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ConfigError(f"teacher model {model_dir} is not a local HF model directory (no config.json)")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_causal_lm(model_dir, DTYPES[dtype]).to(device)
        self.tokenizer = load_tokenizer(model_dir)
        self.generation = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, stop=("\n",),
                                           batch_size=batch_size)

    def step(self, queries: Sequence[StepQuery]) -> list[str]:
        return [first_sentence(text) for text in self._complete([teacher_messages(q) for q in queries], ("\n",))]

    def chat(self, messages_batch: Sequence[list[dict]]) -> list[str]:
        """The whole reply to each chat (up to EOS or max_new_tokens; not cut at a newline or
        a sentence), for callers that want more than one reasoning sentence, such as QA pairs."""
        return self._complete(messages_batch, ())

    def _complete(self, messages_batch: Sequence[list[dict]], stop: tuple[str, ...]) -> list[str]:
        from dataclasses import replace

        prompts = [chat_prompt(m, self.tokenizer) for m in messages_batch]
        return generate(self.model, self.tokenizer, prompts, replace(self.generation, stop=stop))


def chat_completions_url(base_url: str) -> str:
    """POST target for a server's base URL. With or without the trailing "/v1" (and a trailing
    slash) the request goes to "<server>/v1/chat/completions": "http://h:8000" and
    "http://h:8000/v1/" both give "http://h:8000/v1/chat/completions"."""
    base = base_url.rstrip("/")
    return (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"


class OpenAITeacher:
    """Any OpenAI-compatible chat endpoint, greedy (temperature 0) and stopped at a newline.
    Transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried `retries`
    times with doubling waits from `backoff_s`; anything else fails at once."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, max_tokens: int = 64,
                 timeout_s: float = 60, retries: int = 3, max_workers: int = 4, backoff_s: float = 1.0):
        if retries < 0 or max_workers < 1:
            raise ConfigError(f"teacher retries must be >= 0 and max_workers >= 1 (got {retries}, {max_workers})")
        self.url = chat_completions_url(base_url)
        self.model, self.api_key, self.max_tokens = model, api_key, max_tokens
        self.timeout_s, self.retries, self.max_workers, self.backoff_s = timeout_s, retries, max_workers, backoff_s

    def step(self, queries: Sequence[StepQuery]) -> list[str]:
        return [first_sentence(text) for text in self._map(lambda q: self._reply(teacher_messages(q), ["\n"]), queries)]

    def chat(self, messages_batch: Sequence[list[dict]]) -> list[str]:
        """The whole reply to each chat, in order: no newline stop and no first-sentence cut."""
        return self._map(lambda messages: self._reply(messages, None), messages_batch)

    def _map(self, fn, items: Sequence) -> list[str]:
        if self.max_workers == 1 or len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            return list(pool.map(fn, items))  # map keeps the items' order

    def _reply(self, messages: list[dict], stop: list[str] | None) -> str:
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens}
        if stop:
            body["stop"] = stop
        reply = self._post(json.dumps(body).encode("utf-8"))
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise WMTPError(f"POST {self.url}: reply has no choices[0].message.content: {json.dumps(reply)[:300]}")
        return content

    def _post(self, data: bytes) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
                break
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                error = WMTPError(f"POST {self.url}: HTTP {exc.code} {exc.reason}: {detail}")
                transient = exc.code == 429 or exc.code >= 500
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                error, transient = WMTPError(f"POST {self.url}: cannot reach the server ({reason})"), True
            if not transient or attempt == self.retries:
                raise error
            time.sleep(self.backoff_s * 2**attempt)
        try:
            return json.loads(raw)
        except ValueError:
            raise WMTPError(f"POST {self.url}: reply is not JSON: {raw[:300]!r}") from None


TEACHERS = {"hf": HFTeacher, "openai": OpenAITeacher, "world": WorldTeacher}


def build_teacher(kind: str, **options: Any) -> Teacher:
    """A teacher by config name; options are checked against its constructor before it runs."""
    if kind not in TEACHERS:
        raise ConfigError(f"unknown teacher kind {kind!r} (known: {', '.join(TEACHERS)})")
    cls = TEACHERS[kind]
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as exc:
        raise ConfigError(f"teacher {kind!r}: {exc}") from None
    return cls(**options)
