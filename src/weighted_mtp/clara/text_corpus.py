"""Ordinary English for CLaRa training, from text every Python installation carries: the
language reference and library topics that `pydoc` ships (`pydoc_data.topics`, about 30,000
words of prose once code blocks and grammar are dropped).

Why: a compressor trained on the embedded world's profiles alone learns the world's templates,
not reading. On a PDF of ordinary sentences its stage-1 model "reconstructed" every chunk as a
world profile ("The headquarters of Theless are in Kalklal.") and answered nothing. Mixing in
real prose (reconstruct the chunk verbatim from its memory; answer cloze questions about it,
`clara.cloze`) makes the memory carry whatever text it is given. The prose is technical, not
the user's domain: held-out reconstruction and QA on a PDF of everyday sentences are the test.

Chunks are split into train / valid by a seeded permutation, so validation measures chunks the
compressor never saw. Answers are copied from their chunk, as in `clara.cloze`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from weighted_mtp.clara.cloze import ClozeQAGenerator
from weighted_mtp.clara.data import Stage1Example, Stage2Example
from weighted_mtp.clara.pdf import Chunk, chunk_text
from weighted_mtp.errors import ConfigError

_NOT_PROSE = re.compile(r"[*=~^-]{3,}|::=|>>>|\.\.\. ")


def python_doc_paragraphs() -> list[str]:
    """Prose paragraphs of `pydoc_data.topics` (sorted by topic, each once): no indented line
    (code, grammar, tables), at least 12 words, mostly letters."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # some distributions strip it
        raise ConfigError("clara.text_docs needs the standard library's pydoc_data.topics, which this Python "
                          "lacks; set clara.text_docs: 0") from e
    out = []
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            lines = block.split("\n")
            if any(line.startswith((" ", "\t")) for line in lines):
                continue
            text = " ".join(line.strip() for line in lines)
            if len(text.split()) < 12 or _NOT_PROSE.search(text):
                continue
            if sum(c.isalpha() or c == " " for c in text) / len(text) < 0.85:
                continue
            out.append(text)
    return list(dict.fromkeys(out))  # some topics repeat a paragraph: once each


@dataclass(frozen=True)
class TextSplit:
    chunks: list[Chunk]
    stage1: list[Stage1Example]
    stage2: list[Stage2Example]


def text_examples(n_docs: int, seed: int, *, k: int = 1, valid_docs: int = 48,
                  max_words: int = 40) -> dict[str, TextSplit]:
    """{"train", "valid"}: up to `n_docs` training chunks and `valid_docs` held-out ones, each
    giving a stage-1 reconstruction (target: the chunk itself), a stage-1 QA example (its cloze
    questions and answers, where it has any) and one stage-2 example per cloze question, with the
    gold chunk among `k` documents (the others: chunks of the same split without the answer)."""
    if n_docs < 1 or valid_docs < 1:
        raise ConfigError(f"text_examples needs n_docs >= 1 and valid_docs >= 1, got {n_docs} and {valid_docs}")
    every = chunk_text(python_doc_paragraphs(), max_words=max_words)
    last = {c.text: i for i, c in enumerate(every)}  # sentences repeated across topics repeat a few chunks:
    chunks = [c for i, c in enumerate(every) if last[c.text] == i]  # each text once, at its last place
    if valid_docs >= len(chunks):
        raise ConfigError(f"only {len(chunks)} text chunks; valid_docs={valid_docs} leaves none to train on")
    order = [chunks[i] for i in np.random.default_rng([seed, 7]).permutation(len(chunks))]
    parts = {"valid": order[:valid_docs], "train": order[valid_docs:valid_docs + n_docs]}
    cloze = ClozeQAGenerator(n_per_chunk=2)
    out = {}
    for split, part in parts.items():
        rng = np.random.default_rng([seed, 8, 0 if split == "train" else 1])
        stage1: list[Stage1Example] = []
        stage2: list[Stage2Example] = []
        for chunk in part:
            stage1.append(Stage1Example("paraphrase", (), (chunk.text,), chunk.text))
            pairs = cloze.generate([chunk])
            if pairs:
                stage1.append(Stage1Example("qa", tuple(p.question for p in pairs), tuple(p.answer for p in pairs),
                                            chunk.text))
            for p in pairs:
                others = [c.text for c in part if c is not chunk and p.answer not in c.text]
                docs = [others[i] for i in rng.permutation(len(others))[: k - 1]]
                docs.insert(int(rng.integers(len(docs) + 1)), chunk.text)
                stage2.append(Stage2Example(p.question, tuple(docs), p.answer, (p.answer,)))
        out[split] = TextSplit(part, stage1, stage2)
    return out


def mix_into(data: dict[str, dict[str, list]], n_docs: int, seed: int, k: int) -> None:
    """Add the text examples to `build_clara_data`'s train and valid stage-1/2 lists, each list
    then shuffled (seeded) so any prefix of it holds both kinds; stage 3 and test are untouched."""
    text = text_examples(n_docs, seed, k=k)
    for split in ("train", "valid"):
        for stage in ("stage1", "stage2"):
            items = data[split][stage] + getattr(text[split], stage)
            rng = np.random.default_rng([seed, 9, ("train", "valid").index(split), int(stage[-1])])
            data[split][stage] = [items[i] for i in rng.permutation(len(items))]
