"""An embedded world for multi-hop QA: invented entities, one short document per fact, and 2- to
4-hop questions whose every hop is one document. Public multi-hop sets need the web and a large
reader; this world is built in about a second from a seed, so StepER runs end to end offline with
a micro student, and the gold chain of every question is known (the teacher reasons over it).

Files (`save_world`): corpus.jsonl (passages), questions_{train,valid,test}.jsonl, manifest.json.
The corpus alone defines the facts: `load_world` parses each document back with its template."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from weighted_mtp.cache import cache_root
from weighted_mtp.data.collate import ALPACA_PROMPT_WITH_INPUT
from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.files import building_dir
from weighted_mtp.rag.passages import Passage, read_passages, write_passages
from weighted_mtp.world.facts import (RELATIONS, VALUE, Fact, Relation, answer_sentence,  # noqa: F401
                                      draw_triples, question_text)
from weighted_mtp.world.prompts import instruction, join_reasoning

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
HOP_COUNTS = (2, 3, 4)


@dataclass(frozen=True)
class WorldSpec:
    """Everything a world depends on; `ensure_world` caches by its hash."""

    seed: int = 0
    people: int = 700
    films: int = 180
    books: int = 180
    cities: int = 220
    countries: int = 50
    companies: int = 130
    n_train: int = 3000
    n_valid: int = 300
    n_test: int = 300
    hop_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # for 2, 3 and 4 hops

    def split_size(self, split: str) -> int:
        return {"train": self.n_train, "valid": self.n_valid, "test": self.n_test}[split]


@dataclass(frozen=True)
class WorldQuestion:
    qid: str
    question: str
    answer: str
    hops: int
    chain: tuple[Fact, ...]
    supporting_pids: tuple[str, ...]

    @property
    def answers(self) -> tuple[str, ...]:
        """As the public multi-hop examples name their gold answers (the answer, then aliases)."""
        return (self.answer,)


@dataclass
class World:
    """The facts (one document each, in corpus order) and the questions of every split. All
    splits share the one corpus, as HotpotQA's questions share Wikipedia."""

    spec: WorldSpec
    facts: list[Fact]  # in corpus order
    questions: dict[str, list[WorldQuestion]]
    corpus: list[Passage] = field(init=False, compare=False, repr=False)
    entities: dict[str, list[str]] = field(init=False, compare=False, repr=False)  # type -> names

    def __post_init__(self) -> None:
        self.corpus = [Passage(pid=f.pid, title=f.subject, text=f.sentence) for f in self.facts]
        self._by_sentence = {f.sentence: f for f in self.facts}
        self._by_key = {(f.subject, f.relation): f for f in self.facts}
        self._by_pid = {f.pid: f for f in self.facts}
        self._by_qid = {q.qid: q for qs in self.questions.values() for q in qs}
        types: dict[str, dict[str, None]] = {}
        for f in self.facts:
            rel = RELATIONS[f.relation]
            types.setdefault(rel.subject, {})[f.subject] = None
            if rel.object != VALUE:
                types.setdefault(rel.object, {})[f.object] = None
        self.entities = {t: list(names) for t, names in types.items()}

    def fact(self, subject: str, relation: str) -> Fact | None:
        return self._by_key.get((subject, relation))

    def fact_by_sentence(self, sentence: str) -> Fact | None:
        return self._by_sentence.get(sentence.strip())

    def fact_by_pid(self, pid: str) -> Fact | None:
        return self._by_pid.get(pid)

    def relation_of(self, sentence: str) -> str | None:
        fact = self.fact_by_sentence(sentence)
        return fact.relation if fact else None

    def question(self, qid: str) -> WorldQuestion:
        if qid not in self._by_qid:
            raise DataError(f"question id {qid!r} is not in this world")
        return self._by_qid[qid]


# ----------------------------------------------------------------------------------------- build

def _quotas(n: int, weights: tuple[float, ...]) -> list[int]:
    """Split n by weights, rounding by largest remainder so the parts sum to n."""
    exact = [n * w / sum(weights) for w in weights]
    parts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: parts[i] - exact[i])[: n - sum(parts)]:
        parts[i] += 1
    return parts


def _chains(rng, facts: list[Fact], hops: int, n: int, seen: set[str]) -> list[tuple[Fact, ...]]:
    """n random walks of `hops` hop facts that never revisit an entity, so the answer differs
    from the start and every bridge; questions already in `seen` are drawn again."""
    hop_facts: dict[str, list[Fact]] = {}
    for f in facts:
        if RELATIONS[f.relation].phrase:
            hop_facts.setdefault(f.subject, []).append(f)
    starts = list(hop_facts)
    out: list[tuple[Fact, ...]] = []
    for _ in range(100 * n + 1000):
        if len(out) == n:
            return out
        current = starts[rng.integers(len(starts))]
        visited, chain = {current}, []
        for _ in range(hops):
            options = [f for f in hop_facts.get(current, []) if f.object not in visited]
            if not options:
                break
            f = options[rng.integers(len(options))]
            chain.append(f)
            visited.add(current := f.object)
        text = question_text(chain[0].subject, [f.relation for f in chain]) if len(chain) == hops else ""
        if text and text not in seen:
            seen.add(text)
            out.append(tuple(chain))
    raise ConfigError(f"could not find {n} distinct {hops}-hop questions; ask for fewer or a larger world")


def world_spec(seed: int = 0, **sizes) -> WorldSpec:
    """The checked spec of `build_world(seed, **sizes)`."""
    if "hop_weights" in sizes and isinstance(sizes["hop_weights"], (list, tuple)):
        sizes["hop_weights"] = tuple(sizes["hop_weights"])
    try:
        spec = WorldSpec(seed=seed, **sizes)
    except TypeError as exc:
        raise ConfigError(f"unknown world size: {exc}") from None
    for key, value in asdict(spec).items():
        if key == "hop_weights":
            if (not isinstance(value, tuple) or len(value) != 3 or not sum(value)
                    or any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in value)):
                raise ConfigError(f"hop_weights must be three weights >= 0 (for 2, 3 and 4 hops) "
                                  f"with a positive sum, got {value!r}")
            continue
        least = {"seed": None, "n_valid": 0, "n_test": 0}.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or (least is not None and value < least):
            raise ConfigError(f"world '{key}' must be an integer{'' if least is None else f' >= {least}'}, got {value!r}")
    return spec


def build_world(seed: int = 0, **sizes) -> World:
    """The world of `world_spec(seed, **sizes)`; the same arguments give an equal world."""
    spec = world_spec(seed, **sizes)
    rng = np.random.default_rng(spec.seed)
    triples = draw_triples(rng, {"person": spec.people, "film": spec.films, "book": spec.books,
                                 "city": spec.cities, "country": spec.countries, "company": spec.companies})
    order = rng.permutation(len(triples))
    facts = [Fact(s, r, o, f"w{n}", RELATIONS[r].template.format(s=s, o=o))
             for n, (s, r, o) in enumerate(triples[i] for i in order)]
    per_split = {split: _quotas(spec.split_size(split), spec.hop_weights) for split in SPLITS}
    seen: set[str] = set()
    dealt: dict[str, list[tuple[Fact, ...]]] = {split: [] for split in SPLITS}
    for h_index, hops in enumerate(HOP_COUNTS):
        pool = _chains(rng, facts, hops, sum(q[h_index] for q in per_split.values()), seen)
        start = 0
        for split in SPLITS:
            dealt[split] += pool[start:start + per_split[split][h_index]]
            start += per_split[split][h_index]
    questions = {}
    for split in SPLITS:
        chains = [dealt[split][i] for i in rng.permutation(len(dealt[split]))]
        questions[split] = [_question(f"{split}-{i:05d}", chain) for i, chain in enumerate(chains)]
    return World(spec, facts, questions)


def _question(qid: str, chain: tuple[Fact, ...]) -> WorldQuestion:
    return WorldQuestion(qid, question_text(chain[0].subject, [f.relation for f in chain]),
                         chain[-1].object, len(chain), chain, tuple(f.pid for f in chain))


# -------------------------------------------------------------------------------------- files

def save_world(world: World, directory: str | Path) -> Path:
    out = Path(directory)
    with building_dir(out) as tmp:
        write_passages(tmp / "corpus.jsonl", world.corpus)
        for split in SPLITS:
            with open(tmp / f"questions_{split}.jsonl", "w", encoding="utf-8") as fh:
                for q in world.questions[split]:
                    fh.write(json.dumps({
                        "id": q.qid, "question": q.question, "answer": q.answer, "answers": [q.answer],
                        "hops": q.hops, "supporting": list(q.supporting_pids),
                        "chain": [asdict(f) for f in q.chain]}, ensure_ascii=False) + "\n")
        manifest = {"format_version": FORMAT_VERSION, "seed": world.spec.seed, "spec": asdict(world.spec),
                    "documents": len(world.corpus),
                    "entities": {t: len(names) for t, names in world.entities.items()},
                    "questions": {s: {str(h): sum(q.hops == h for q in world.questions[s]) for h in HOP_COUNTS}
                                  for s in SPLITS}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _parse_fact(p: Passage, path: Path, line_no: int) -> Fact:
    """The fact a document states, found by matching its text against every template."""
    found = []
    for rel in RELATIONS.values():
        head, tail = rel.template.replace("{s}", p.title).split("{o}")
        text = p.text
        if text.startswith(head) and text.endswith(tail) and len(text) > len(head) + len(tail):
            found.append(Fact(p.title, rel.name, text[len(head):len(text) - len(tail)], p.pid, text))
    if len(found) != 1:
        raise DataError.at(path, line_no, f"passage {p.pid!r} matches {len(found)} fact templates for "
                                          f"subject {p.title!r} (need exactly one): {p.text!r}")
    return found[0]


def _parse_question(line: str, world: World, path: Path, line_no: int) -> WorldQuestion:
    try:
        obj = json.loads(line)
        chain = tuple(Fact(**f) for f in obj["chain"])
        q = WorldQuestion(obj["id"], obj["question"], obj["answer"], obj["hops"], chain, tuple(obj["supporting"]))
        known = bool(chain) and all(world.fact_by_pid(f.pid) == f for f in chain)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError.at(path, line_no, f"bad question line ({type(exc).__name__}: {exc})") from None
    if not known:
        raise DataError.at(path, line_no, f"question {q.qid!r}: its chain is empty or names facts not in the corpus")
    if q != _question(q.qid, chain):
        raise DataError.at(path, line_no, f"question {q.qid!r}: question, answer, hops or supporting "
                                          "do not follow from its chain")
    return q


def load_world(directory: str | Path) -> World:
    """The world `save_world` wrote; every line is checked, so a hand-edited file fails at its line."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest["format_version"] != FORMAT_VERSION:
            raise DataError(f"{manifest_path}: format_version {manifest['format_version']!r}, "
                            f"this code reads {FORMAT_VERSION}; rebuild the world")
        spec = WorldSpec(**{**manifest["spec"], "hop_weights": tuple(manifest["spec"]["hop_weights"])})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{manifest_path}: not a world manifest ({type(exc).__name__}: {exc})") from None
    corpus_path = directory / "corpus.jsonl"
    facts, seen = [], set()
    # Line numbers count passages: exact for a corpus we wrote, which has no blank lines.
    for line_no, p in enumerate(read_passages(corpus_path), 1):
        fact = _parse_fact(p, corpus_path, line_no)
        if (fact.subject, fact.relation) in seen:
            raise DataError.at(corpus_path, line_no, f"a second '{fact.relation}' fact for {fact.subject!r}; "
                                                     "each subject has at most one object per relation")
        seen.add((fact.subject, fact.relation))
        facts.append(fact)
    world = World(spec, facts, {})
    questions = {}
    for split in SPLITS:
        path = directory / f"questions_{split}.jsonl"
        if not path.is_file():
            raise DataError(f"{path}: not found")
        with open(path, encoding="utf-8") as fh:
            questions[split] = [_parse_question(line, world, path, n) for n, line in enumerate(fh, 1) if line.strip()]
    return World(spec, facts, questions)


def world_dir(seed: int = 0, **sizes) -> Path:
    """Where `ensure_world` caches this world: keyed by a hash of the format and the spec."""
    spec = world_spec(seed, **sizes)
    key = json.dumps({"format_version": FORMAT_VERSION, **asdict(spec)}, sort_keys=True)
    return cache_root() / "data" / f"steper-world-seed{spec.seed}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def ensure_world(seed: int = 0, **sizes) -> Path:
    """The cached world directory for these parameters, built on first use."""
    out = world_dir(seed, **sizes)
    if not (out / "manifest.json").is_file():
        save_world(build_world(seed, **sizes), out)
    return out


def world_texts(world: World) -> Iterator[str]:
    """What a tokenizer for this world should see: every document as a prompt shows it, and for
    each train question the prompt template, its instruction and its gold reasoning ending in the
    answer sentence (so the template's fixed words cost a few tokens, not a hundred)."""
    header = ALPACA_PROMPT_WITH_INPUT.format(instruction="", input="")  # the training template's fixed text
    for p in world.corpus:
        yield p.as_text()
    for q in world.questions["train"]:
        yield header
        yield instruction(q.question)
        yield join_reasoning([f.sentence for f in q.chain] + [answer_sentence(q.answer)])
