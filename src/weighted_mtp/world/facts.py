"""The vocabulary of the embedded world (entity types, relations with their one sentence and
one question phrase, invented names) and the random draws of its facts. The world itself, its
questions and its files are in `weighted_mtp.world.world`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from weighted_mtp.errors import ConfigError
from weighted_mtp.world.prompts import ANSWER_MARKER, INSTRUCTION

VALUE = "value"  # the object type of attribute facts, which are retrieval distractors, never hops


@dataclass(frozen=True)
class Relation:
    name: str
    subject: str   # entity type
    object: str    # entity type, or VALUE
    template: str  # exactly one sentence with {s} and {o}
    phrase: str = ""  # how a question names the object ("the director of {s}"); "" = not a hop


RELATIONS: dict[str, Relation] = {r.name: r for r in (
    Relation("director", "film", "person", "{s} was directed by {o}.", "the director of {s}"),
    Relation("author", "book", "person", "{s} was written by {o}.", "the author of {s}"),
    Relation("birthplace", "person", "city", "{s} was born in {o}.", "the birthplace of {s}"),
    Relation("mother", "person", "person", "The mother of {s} is {o}.", "the mother of {s}"),
    Relation("employer", "person", "company", "{s} works for {o}.", "the employer of {s}"),
    Relation("founder", "company", "person", "{s} was founded by {o}.", "the founder of {s}"),
    Relation("headquarters", "company", "city", "{s} is headquartered in {o}.", "the headquarters of {s}"),
    Relation("country", "city", "country", "{s} is located in {o}.", "the country of {s}"),
    Relation("capital", "country", "city", "The capital of {s} is {o}.", "the capital of {s}"),
    Relation("released", "film", VALUE, "{s} was released in {o}."),
    Relation("published", "book", VALUE, "{s} was published in {o}."),
    Relation("profession", "person", VALUE, "{s} is a {o}."),
    Relation("population", "city", VALUE, "{s} has a population of {o}."),
    Relation("industry", "company", VALUE, "{s} makes {o}."),
)}
# relation -> (share of subjects that have the fact, most subjects per object). The caps keep any
# entity from becoming a hub that BM25 retrieves for every query. "capital" is drawn separately.
_LINKS = {"director": (1.0, 2), "author": (1.0, 2), "birthplace": (0.8, 3), "mother": (0.4, 2),
          "employer": (0.35, 3), "founder": (1.0, 1), "headquarters": (1.0, 2), "country": (1.0, 7)}
_VALUES = {
    "released": (0.5, [str(y) for y in range(1900, 2021)]),
    "published": (0.5, [str(y) for y in range(1900, 2021)]),
    "profession": (0.3, "painter singer doctor lawyer teacher engineer farmer poet actor architect "
                        "sailor baker".split()),
    "population": (0.4, [str(k * 1000) for k in range(5, 900)]),
    "industry": (0.5, "shoes ships paper glass toys bicycles lamps clocks cheese tea".split()),
}
_ONSETS = "b d f g h k l m n p r s t v z br dr kr st th sh".split()
_VOWELS = "a e i o u".split()
_CODAS = ["", "", "", "n", "r", "l", "s", "m"]
# Names may not be English words of the text around them, or BM25 and the student would confuse them.
_BANNED = {w.strip(".{}:\"<>").lower() for r in RELATIONS.values() for w in r.template.split() + r.phrase.split()}
_BANNED |= {w.strip(".,:\"<>").lower() for w in INSTRUCTION.split()} | {"who", "what", "answer"}


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    object: str
    pid: str
    sentence: str


def question_text(start: str, relations: list[str]) -> str:
    """Nest the hop phrases around the start entity: the last hop is the outermost phrase."""
    phrase = start
    for name in relations:
        phrase = RELATIONS[name].phrase.format(s=phrase)
    return f"{'Who' if RELATIONS[relations[-1]].object == 'person' else 'What'} is {phrase}?"


def answer_sentence(answer: str) -> str:
    return f"{ANSWER_MARKER} {answer}."


def draw_triples(rng: np.random.Generator, counts: dict[str, int]) -> list[tuple[str, str, str]]:
    """(subject, relation, object) for a world with `counts` entities of each type."""
    return _triples(rng, _names(rng, counts))


def _words(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct pseudo-words, none a substring of another (case-insensitive), so no name is
    a substring of another name: every name word is used once and starts with a capital."""
    out: list[str] = []
    accepted: set[str] = set()
    substrings: set[str] = set()
    for _ in range(50 * n + 1000):
        if len(out) == n:
            return out
        k = 2 + int(rng.random() < 0.2)
        w = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                    + _CODAS[rng.integers(len(_CODAS))] for _ in range(k))
        if len(w) > 7 or w in substrings or w in _BANNED:
            continue
        parts = {w[i:j] for i in range(len(w)) for j in range(i + 1, len(w) + 1)}
        if parts & accepted:
            continue
        out.append(w.capitalize())
        accepted.add(w)
        substrings |= parts
    raise ConfigError(f"could not invent {n} distinct names; make the world smaller")


def _names(rng: np.random.Generator, counts: dict[str, int]) -> dict[str, list[str]]:
    """People get a first and a last name, films and books half the time "The <Word>"."""
    words = iter(_words(rng, sum(counts.values()) + counts["person"]))
    names: dict[str, list[str]] = {}
    for kind, n in counts.items():
        if kind == "person":
            names[kind] = [f"{next(words)} {next(words)}" for _ in range(n)]
        elif kind in ("film", "book"):
            names[kind] = [("The " if rng.random() < 0.5 else "") + next(words) for _ in range(n)]
        else:
            names[kind] = [next(words) for _ in range(n)]
    return names


def _link(rng, subjects: list[str], objects: list[str], share: float, cap: int, older: bool):
    """(subject, object) pairs: a `share` of the subjects, each with a random object that has
    fewer than `cap` subjects yet; `older` (same-type relations) links only to later names, so
    chains like mother-of-mother never cycle."""
    load = dict.fromkeys(objects, 0)
    pairs = []
    for i, s in enumerate(subjects):
        if rng.random() >= share:
            continue
        pool = objects[i + 1:] if older else objects
        free = [o for o in pool if load[o] < cap]
        if free:
            o = free[rng.integers(len(free))]
            load[o] += 1
            pairs.append((s, o))
    return pairs


def _triples(rng, names: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    triples = []
    for rel, (share, cap) in _LINKS.items():
        r = RELATIONS[rel]
        pairs = _link(rng, names[r.subject], names[r.object], share, cap, r.subject == r.object)
        triples += [(s, rel, o) for s, o in pairs]
    cities_of: dict[str, list[str]] = {}
    for s, rel, o in triples:
        if rel == "country":
            cities_of.setdefault(o, []).append(s)
    for country in names["country"]:
        if country in cities_of:
            triples.append((country, "capital", cities_of[country][rng.integers(len(cities_of[country]))]))
    for rel, (share, values) in _VALUES.items():
        triples += [(s, rel, values[rng.integers(len(values))])
                    for s in names[RELATIONS[rel].subject] if rng.random() < share]
    return triples
