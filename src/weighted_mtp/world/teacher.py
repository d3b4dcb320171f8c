"""A teacher for the embedded world that needs no model: it knows each question's chain of
relations and the world's facts, but it can only state what the retrieved passages say. So it is
as good as its retrieval, like the 70B teacher of StepER: when BM25 misses the next hop it states
a wrong fact and ends with a wrong answer, and the answer filter drops that trajectory."""

from __future__ import annotations

import hashlib
from typing import Sequence

from weighted_mtp.errors import ConfigError
from weighted_mtp.world.prompts import StepQuery, first_sentence
from weighted_mtp.world.world import World, answer_sentence


class WorldTeacher:
    """One sentence per query. Step s (s = len(reasoning) hops done) follows the question's s-th
    relation from the bridge: the object of the last fact its reasoning stated (the start entity
    at first). The gold fact is stated only if its document was retrieved; otherwise the teacher
    states the best-ranked retrieved fact of the same relation, else the first retrieved passage
    not yet stated. With probability `error_rate` (a hash of seed, qid and step, so reruns agree)
    it prefers a same-relation distractor even when the gold document is there."""

    def __init__(self, world: World, error_rate: float = 0.0, seed: int = 0):
        if isinstance(error_rate, bool) or not isinstance(error_rate, (int, float)) or not 0.0 <= error_rate <= 1.0:
            raise ConfigError(f"error_rate must be a number in [0, 1], got {error_rate!r}")
        self.world = world
        self.error_rate = float(error_rate)
        self.seed = seed

    def step(self, queries: Sequence[StepQuery]) -> list[str]:
        return [self._sentence(q) for q in queries]

    def _slips(self, qid: str, step: int) -> bool:
        digest = hashlib.sha256(f"{self.seed}:{qid}:{step}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.error_rate

    def _sentence(self, query: StepQuery) -> str:
        question = self.world.question(query.qid)
        bridge = question.chain[0].subject
        for sentence in query.reasoning:
            fact = self.world.fact_by_sentence(sentence)
            if fact is not None:
                bridge = fact.object
        done = len(query.reasoning)
        gold = self.world.fact(bridge, question.chain[done].relation) if done < question.hops else None
        if gold is None:  # every hop stated, or astray at an entity without the next relation
            return answer_sentence(bridge)
        stated = {s.strip() for s in query.reasoning}
        texts = [first_sentence(p.text) for p in query.passages]
        fresh = [t for t in texts if t not in stated]
        wrong = [t for t in fresh if t != gold.sentence and self.world.relation_of(t) == gold.relation]
        if gold.sentence in texts and not (wrong and self._slips(query.qid, done)):
            return gold.sentence
        if wrong or fresh:
            return (wrong or fresh)[0]
        return answer_sentence(bridge)
