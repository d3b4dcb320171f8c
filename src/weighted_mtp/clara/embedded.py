"""CLaRa's three stages of data, built from the embedded StepER world so CLaRa runs offline with a
tiny model. Upstream's stage-1 data is an LLM's QA pairs and paraphrases of Wikipedia passages,
checked by a judge; here a document is one entity's profile (all its facts) and every target is
correct by construction: one question per fact (simple QA), two facts per question (complex QA),
and the facts reordered under other sentence templates (paraphrase). Stages 2 and 3 ask about one
fact: stage 2 gives the gold profile and k - 1 distractors, stage 3 hides it among n_candidates;
a distractor is a profile of the same entity type that does not state the answer.

Documents, not questions, are split into train/valid/test, so nothing about a test entity is
trained on: no stage-1 record of its profile, no question about it. Distractors come from the
example's own split (topped up from train for the small valid/test splits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from weighted_mtp.clara.data import Stage1Example, Stage2Example, Stage3Example, write_stage
from weighted_mtp.clara.text_corpus import mix_into
from weighted_mtp.errors import ConfigError
from weighted_mtp.files import building_dir
from weighted_mtp.rag.passages import Passage, write_passages
from weighted_mtp.world.facts import Fact
from weighted_mtp.world.world import RELATIONS, SPLITS, World

# One question per relation, answered by the fact's object.
QUESTIONS = {
    "director": "Who directed {s}?", "author": "Who wrote {s}?", "birthplace": "Where was {s} born?",
    "mother": "Who is the mother of {s}?", "employer": "Which company does {s} work for?",
    "founder": "Who founded {s}?", "headquarters": "Where is {s} headquartered?",
    "country": "Which country is {s} in?", "capital": "What is the capital of {s}?",
    "released": "When was {s} released?", "published": "When was {s} published?",
    "profession": "What is the profession of {s}?", "population": "What is the population of {s}?",
    "industry": "What does {s} make?",
}
# The same facts in other words, for paraphrase targets (the documents use RELATIONS' templates).
PARAPHRASES = {
    "director": "{o} directed {s}.", "author": "{o} wrote {s}.", "birthplace": "{o} is the birthplace of {s}.",
    "mother": "{o} is the mother of {s}.", "employer": "{o} employs {s}.", "founder": "{o} founded {s}.",
    "headquarters": "The headquarters of {s} are in {o}.", "country": "{s} is a city in {o}.",
    "capital": "{o} is the capital of {s}.", "released": "{s} came out in {o}.",
    "published": "{s} appeared in {o}.", "profession": "{s} works as a {o}.",
    "population": "{o} people live in {s}.", "industry": "{s} is a maker of {o}.",
}
assert set(QUESTIONS) == set(PARAPHRASES) == set(RELATIONS), "a relation without a CLaRa template"

_STREAMS = {"split": 0, "paraphrase": 1, "stage2": 2, "stage3": 3}  # one rng per use: sizes don't shift others


# ------------------------------------------------------------------------------------ documents

def profile_text(facts: list[Fact]) -> str:
    return " ".join(f.sentence for f in facts)


def profiles(world: World, *, max_words: int = 60) -> list[Passage]:
    """One document per entity: its facts (as the world states them) in RELATIONS order, as long
    as the document stays within `max_words`; entities with fewer than 2 facts have nothing to
    reorder in a paraphrase nor to join in a complex question, and are left out. pid = title = the entity's name."""
    out = []
    for entity in dict.fromkeys(f.subject for f in world.facts):
        facts, words = [], 0
        for rel in RELATIONS:
            fact = world.fact(entity, rel)
            if fact is not None and words + len(fact.sentence.split()) <= max_words:
                facts.append(fact)
                words += len(fact.sentence.split())
        if len(facts) >= 2:
            out.append(Passage(pid=entity, title=entity, text=profile_text(facts)))
    return out


def doc_facts(world: World, doc: Passage) -> list[Fact]:
    """The facts a profile states, in its order."""
    return [f for rel in RELATIONS if (f := world.fact(doc.pid, rel)) is not None and f.sentence in doc.text]


def entity_type(world: World, doc: Passage) -> str:
    return RELATIONS[doc_facts(world, doc)[0].relation].subject


# ------------------------------------------------------------------------------------ questions

def question(fact: Fact) -> str:
    return QUESTIONS[fact.relation].format(s=fact.subject)


def complex_question(a: Fact, b: Fact) -> str:
    """Two facts in one question, answered "a; b": upstream's complex QA joins 2-3 facts."""
    second = question(b)
    return f"{question(a)[:-1]}, and {second[0].lower()}{second[1:]}"


def paraphrase(facts: list[Fact], rng: np.random.Generator) -> str:
    """The facts in another order (never the document's own, when there are two or more) and
    under the other templates."""
    order = list(rng.permutation(len(facts)))
    if order == sorted(order) and len(order) > 1:
        order = order[1:] + order[:1]
    return " ".join(PARAPHRASES[facts[i].relation].format(s=facts[i].subject, o=facts[i].object) for i in order)


def stage1_examples(world: World, doc: Passage, rng: np.random.Generator) -> list[Stage1Example]:
    """Simple QA (every fact), complex QA (consecutive fact pairs) and a paraphrase of one document."""
    facts = doc_facts(world, doc)
    pairs = list(zip(facts, facts[1:]))
    return [
        Stage1Example("qa", tuple(question(f) for f in facts), tuple(f.object for f in facts), doc.text),
        Stage1Example("qa", tuple(complex_question(a, b) for a, b in pairs),
                      tuple(f"{a.object}; {b.object}" for a, b in pairs), doc.text),
        Stage1Example("paraphrase", (), (paraphrase(facts, rng),), doc.text),
    ]


def _distractors(gold: Passage, answer: str, pools: list[list[Passage]], n: int,
                 rng: np.random.Generator) -> list[Passage]:
    """n profiles of the gold's type that do not contain the answer at all (so none states the
    answer, under this relation or another), from the first pool, then the next."""
    out: list[Passage] = []
    for pool in pools:
        free = [p for p in pool if p.pid != gold.pid and answer not in p.text and p not in out]
        out += [free[i] for i in rng.permutation(len(free))[: n - len(out)]]
    if len(out) < n:
        raise ConfigError(f"only {len(out)} distractor documents for {gold.pid!r} (need {n}); "
                          "ask for fewer candidates (k / n_candidates) or more documents")
    return out


def _pool(gold: Passage, answer: str, pools: list[list[Passage]], n: int,
          rng: np.random.Generator) -> tuple[tuple[str, ...], int]:
    """The gold document among n - 1 distractors at a random position: (docs, gold position)."""
    docs = _distractors(gold, answer, pools, n - 1, rng)
    at = int(rng.integers(n))
    docs.insert(at, gold)
    return tuple(p.text for p in docs), at


# ---------------------------------------------------------------------------------------- build

def split_documents(docs: list[Passage], seed: int, *, train_docs: int, valid_docs: int,
                    test_docs: int) -> dict[str, list[Passage]]:
    """A random partition of the documents (test first, then valid, then at most `train_docs`)."""
    for name, value in (("train_docs", train_docs), ("valid_docs", valid_docs), ("test_docs", test_docs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"'{name}' must be an integer >= 1, got {value!r}")
    if valid_docs + test_docs >= len(docs):
        raise ConfigError(f"the world has {len(docs)} documents with >= 2 facts; valid_docs + test_docs "
                          f"= {valid_docs + test_docs} leaves none for train")
    order = [docs[i] for i in np.random.default_rng([seed, _STREAMS["split"]]).permutation(len(docs))]
    return {"test": order[:test_docs], "valid": order[test_docs:test_docs + valid_docs],
            "train": order[test_docs + valid_docs:test_docs + valid_docs + train_docs]}


def build_clara_data(world: World, *, k: int = 2, n_candidates: int = 8, seed: int = 0, train_docs: int = 600,
                     valid_docs: int = 80, test_docs: int = 80, max_words: int = 60) -> dict[str, dict[str, list]]:
    """{split: {"documents": [Passage], "stage1": [...], "stage2": [...], "stage3": [...]}}.
    Stage 2: one question per fact of each document, with k documents (gold + k - 1 same-type
    distractors); stage 3: the same questions over n_candidates candidates, pos_index = [gold]."""
    for name, value in (("k", k), ("n_candidates", n_candidates)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"'{name}' must be an integer >= 1, got {value!r}")
    docs = split_documents(profiles(world, max_words=max_words), seed,
                           train_docs=train_docs, valid_docs=valid_docs, test_docs=test_docs)
    types = {p.pid: entity_type(world, p) for split in SPLITS for p in docs[split]}
    by_type = {split: {} for split in SPLITS}
    for split in SPLITS:
        for p in docs[split]:
            by_type[split].setdefault(types[p.pid], []).append(p)
    out: dict[str, dict[str, list]] = {}
    for split in SPLITS:
        rngs = {use: np.random.default_rng([seed, stream, SPLITS.index(split)]) for use, stream in _STREAMS.items()}
        stage1, stage2, stage3 = [], [], []
        for doc in docs[split]:
            stage1 += stage1_examples(world, doc, rngs["paraphrase"])
            same = [by_type[split][types[doc.pid]]]
            if split != "train":
                same.append(by_type["train"].get(types[doc.pid], []))
            for fact in doc_facts(world, doc):
                q, a = question(fact), fact.object
                texts, _ = _pool(doc, a, same, k, rngs["stage2"])
                stage2.append(Stage2Example(q, texts, a, (a,)))
                texts, at = _pool(doc, a, same, n_candidates, rngs["stage3"])
                stage3.append(Stage3Example(q, texts, a, (a,), (at,)))
        out[split] = {"documents": docs[split], "stage1": stage1, "stage2": stage2, "stage3": stage3}
    return out


def write_clara_data(out_dir: str | Path, world: World, *, text_docs: int = 0, **options) -> Path:
    """stage{1,2,3}_{split}.jsonl in upstream's formats and documents.jsonl (every profile, as
    Passage JSONL) under out_dir, which is replaced as a whole. `options` are build_clara_data's;
    `text_docs` > 0 mixes that many chunks of ordinary prose into stages 1-2 (`clara.text_corpus`)."""
    data = build_clara_data(world, **options)
    if text_docs:
        mix_into(data, text_docs, seed=options.get("seed", 0), k=options.get("k", 2))
    out = Path(out_dir)
    with building_dir(out) as tmp:
        for split in SPLITS:
            for stage in (1, 2, 3):
                write_stage(tmp / f"stage{stage}_{split}.jsonl", data[split][f"stage{stage}"])
        write_passages(tmp / "documents.jsonl", [p for split in SPLITS for p in data[split]["documents"]])
    return out
