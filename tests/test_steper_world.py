"""The embedded multi-hop world and the teacher that reasons over its gold facts."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.rag.passages import Passage
from weighted_mtp.world.prompts import StepQuery, extract_answer, first_sentence, instruction, is_final
from weighted_mtp.world.world import (
    RELATIONS, SPLITS, build_world, ensure_world, load_world, save_world, world_dir, world_texts,
)
from weighted_mtp.world.teacher import WorldTeacher

SMALL = dict(people=120, films=30, books=30, cities=40, countries=10, companies=25, n_train=60, n_valid=15, n_test=15)
# Written out by hand (not read from the module) so a changed phrase or template fails here.
PHRASES = {"director": "the director of {}", "author": "the author of {}", "birthplace": "the birthplace of {}",
           "mother": "the mother of {}", "employer": "the employer of {}", "founder": "the founder of {}",
           "headquarters": "the headquarters of {}", "country": "the country of {}", "capital": "the capital of {}"}
SENTENCES = {"director": "{} was directed by {}.", "author": "{} was written by {}.", "birthplace": "{} was born in {}.",
             "mother": "The mother of {} is {}.", "employer": "{} works for {}.", "founder": "{} was founded by {}.",
             "headquarters": "{} is headquartered in {}.", "country": "{} is located in {}.",
             "capital": "The capital of {} is {}."}


@pytest.fixture(scope="module")
def world():
    return build_world(0)


def all_questions(world):
    return [q for split in SPLITS for q in world.questions[split]]


def run(teacher, question, passages, max_steps=6):
    """The teacher's trajectory over a fixed passage list (no retrieval): one sentence per step."""
    reasoning: list[str] = []
    while max_steps and not (reasoning and is_final(reasoning[-1])):
        [sentence] = teacher.step([StepQuery(question.qid, question.question, tuple(passages), tuple(reasoning))])
        reasoning.append(sentence)
        max_steps -= 1
    return reasoning


def passage(world, fact):
    return world.corpus[[p.pid for p in world.corpus].index(fact.pid)]


def distractor(world, relation, avoid_objects):
    """A document of `relation` whose object is none of `avoid_objects`."""
    return next(passage(world, f) for f in world.facts if f.relation == relation and f.object not in avoid_objects)


# ------------------------------------------------------------------------------------ the world

def test_same_seed_same_world_and_another_seed_another(world):
    again = build_world(0)
    assert again == world and again.corpus == world.corpus
    other = build_world(1)
    assert other != world
    assert not set(p.text for p in other.corpus) & set(p.text for p in world.corpus[:200])


def test_default_sizes_and_hop_mix(world):
    assert {s: len(world.questions[s]) for s in SPLITS} == {"train": 3000, "valid": 300, "test": 300}
    for split, n in (("train", 1000), ("valid", 100), ("test", 100)):
        assert Counter(q.hops for q in world.questions[split]) == {2: n, 3: n, 4: n}
    assert 2000 <= len(world.corpus) <= 4000
    skewed = build_world(3, **{**SMALL, "n_train": 80, "hop_weights": (0, 1, 3)})
    assert Counter(q.hops for q in skewed.questions["train"]) == {3: 20, 4: 60}
    # 11 by (1, 1, 2) is 2.75 + 2.75 + 5.5: the largest remainders round up, the parts sum to 11.
    odd = build_world(3, **{**SMALL, "n_train": 11, "hop_weights": [1, 1, 2]})
    assert Counter(q.hops for q in odd.questions["train"]) == {2: 3, 3: 3, 4: 5}


def test_each_subject_has_one_object_per_relation_and_documents_are_facts(world):
    keys = Counter((f.subject, f.relation) for f in world.facts)
    assert max(keys.values()) == 1
    assert len({p.pid for p in world.corpus}) == len({p.text for p in world.corpus}) == len(world.corpus)
    for p, f in zip(world.corpus, world.facts):
        assert (p.pid, p.title, p.text) == (f.pid, f.subject, f.sentence)
        assert world.fact_by_sentence("  " + p.text + "\n") == f == world.fact(f.subject, f.relation)
        assert world.relation_of(p.text) == f.relation
    assert world.fact_by_sentence("Nobody was born in Nowhere.") is None


def test_names_are_unique_short_and_never_inside_another_name(world):
    names = [n for kind in world.entities.values() for n in kind]
    assert set(world.entities) == {"person", "film", "book", "city", "country", "company"}
    assert len(names) == len(set(names)) > 1000
    for a in names:
        assert a[0].isupper() and 1 <= len(a.split()) <= 2 and not set(a) & set(".!?:\n{}")
    lowered = [n.lower() for n in names]
    joined = "\n".join(lowered)
    for a in lowered:  # a name occurring anywhere but as itself is a substring of another name
        assert joined.count(a) == 1, a
    assert all(len(n.split()) == 2 for n in world.entities["person"])


def test_no_hub_entities(world):
    mentions = Counter()
    for f in world.facts:
        mentions[f.subject] += 1
        if f.relation in PHRASES:
            mentions[f.object] += 1
    names = [n for kind in world.entities.values() for n in kind]
    assert max(mentions[n] for n in names) <= 9
    caps = {"director": 2, "author": 2, "birthplace": 3, "mother": 2, "employer": 3, "founder": 1,
            "headquarters": 2, "country": 7, "capital": 1}
    for relation, cap in caps.items():
        assert max(Counter(f.object for f in world.facts if f.relation == relation).values()) == cap, relation
    assert 2.0 <= sum(mentions[n] for n in names) / len(names) <= 5.0


def test_questions_follow_their_chain(world):
    for q in all_questions(world):
        entity, seen = q.chain[0].subject, [q.chain[0].subject]
        for f in q.chain:  # reference walk with world.fact
            assert f == world.fact(entity, f.relation) and f.relation in PHRASES
            entity = f.object
            seen.append(entity)
        assert q.answers == (q.answer,)
        assert q.answer == entity and len(set(seen)) == len(seen) == q.hops + 1
        assert 2 <= q.hops <= 4 and len(q.chain) == q.hops
        phrase = q.chain[0].subject
        for f in q.chain:
            phrase = PHRASES[f.relation].format(phrase)
        wh = "Who" if q.chain[-1].relation in ("director", "author", "mother", "founder") else "What"
        assert q.question == f"{wh} is {phrase}?"
        assert q.supporting_pids == tuple(f.pid for f in q.chain)
        assert [world.fact_by_pid(pid).sentence for pid in q.supporting_pids] == [f.sentence for f in q.chain]


def test_splits_are_disjoint_by_question(world):
    texts = {s: {q.question for q in world.questions[s]} for s in SPLITS}
    ids = [q.qid for q in all_questions(world)]
    assert len(ids) == len(set(ids))
    assert sum(len(t) for t in texts.values()) == len(ids)  # no question twice, even within a split
    assert not texts["train"] & texts["valid"] and not texts["train"] & texts["test"] and not texts["valid"] & texts["test"]
    assert world.question(world.questions["test"][5].qid) is world.questions["test"][5]
    with pytest.raises(DataError, match="nope"):
        world.question("nope")


def test_every_template_is_one_sentence(world):
    for rel in RELATIONS.values():
        s = rel.template.format(s="The Kesh", o="Tarkin Oduvo")
        assert first_sentence(s) == s and s.count(".") == 1 and s.endswith(".")
    if set(RELATIONS) - set(SENTENCES) - {"released", "published", "profession", "population", "industry"}:
        pytest.fail("a hop relation without a hand-written sentence in this test")
    for f in world.facts:
        if f.relation in SENTENCES:
            assert f.sentence == SENTENCES[f.relation].format(f.subject, f.object)
        assert first_sentence(f.sentence + " Next sentence.") == f.sentence
    for q in all_questions(world):
        answer = f"So the answer is: {q.answer}."
        assert first_sentence(answer) == answer and extract_answer(answer) == q.answer


def test_bad_sizes_are_config_errors():
    for bad in ({"people": 0}, {"n_train": -1}, {"hop_weights": (0, 0, 0)}, {"hop_weights": (1, 1)},
                {"films": 2.5}, {"planets": 3}):
        with pytest.raises(ConfigError):
            build_world(0, **bad)
    with pytest.raises(ConfigError, match=r"distinct \d-hop questions"):
        build_world(0, people=4, films=2, books=2, cities=2, countries=1, companies=1, n_train=50, n_valid=0, n_test=0)


# ------------------------------------------------------------------------------------ files

def test_save_load_round_trip_and_manifest(tmp_path):
    small = build_world(2, **SMALL)
    out = save_world(small, tmp_path / "w")
    assert sorted(p.name for p in out.iterdir()) == ["corpus.jsonl", "manifest.json", "questions_test.jsonl",
                                                     "questions_train.jsonl", "questions_valid.jsonl"]
    loaded = load_world(out)
    assert loaded == small and loaded.corpus == small.corpus and loaded.entities == small.entities
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 2 and manifest["documents"] == len(small.corpus) and manifest["format_version"] == 1
    assert sum(manifest["questions"]["valid"].values()) == 15
    row = json.loads((out / "questions_train.jsonl").read_text().splitlines()[0])
    q = small.questions["train"][0]
    assert row["answers"] == [q.answer] and row["supporting"] == list(q.supporting_pids)
    assert [c["sentence"] for c in row["chain"]] == [f.sentence for f in q.chain]


@pytest.mark.parametrize("edit, message", [
    (lambda row: "{not json", "invalid JSON|bad question line"),
    (lambda row: json.dumps({**row, "answer": "Somebody Else"}), "do not follow from its chain"),
    (lambda row: json.dumps({**row, "chain": row["chain"][:1] + [{**row["chain"][1], "object": "X"}]}), "not in the corpus"),
    (lambda row: json.dumps({k: v for k, v in row.items() if k != "hops"}), "bad question line"),
])
def test_a_bad_questions_line_names_file_and_line(tmp_path, edit, message):
    out = save_world(build_world(2, **SMALL), tmp_path / "w")
    path = out / "questions_valid.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = edit(json.loads(lines[2]))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"questions_valid\.jsonl:3: .*({message})"):
        load_world(out)


def test_a_corpus_line_that_is_no_fact_names_its_line(tmp_path):
    out = save_world(build_world(2, **SMALL), tmp_path / "w")
    path = out / "corpus.jsonl"
    lines = path.read_text().splitlines()
    lines[4] = json.dumps({**json.loads(lines[4]), "text": "Something else entirely."})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl:5: .*fact templates"):
        load_world(out)


def test_a_second_fact_for_a_subject_and_relation_names_its_line(tmp_path):
    small = build_world(2, **SMALL)
    out = save_world(small, tmp_path / "w")
    f = next(f for f in small.facts if f.relation == "country")
    other = next(g.object for g in small.facts if g.relation == "country" and g.object != f.object)
    with open(out / "corpus.jsonl", "a") as fh:
        fh.write(json.dumps({"id": "w999999", "title": f.subject, "text": f"{f.subject} is located in {other}."}) + "\n")
    with pytest.raises(DataError, match=rf"corpus\.jsonl:{len(small.corpus) + 1}: a second 'country' fact"):
        load_world(out)


def test_ensure_world_caches_by_parameters(wmtp_cache):
    path = ensure_world(4, **SMALL)
    assert path.parent == wmtp_cache / "data" and path.name.startswith("steper-world-seed4-")
    stamp = (path / "manifest.json").stat().st_mtime_ns
    assert ensure_world(4, **SMALL) == path and (path / "manifest.json").stat().st_mtime_ns == stamp
    assert load_world(path) == build_world(4, **SMALL)
    assert world_dir(4, **{**SMALL, "n_test": 16}) != path and world_dir(5, **SMALL) != path


def test_world_texts_cover_documents_questions_and_answers():
    small = build_world(2, **SMALL)
    texts = list(world_texts(small))
    q = small.questions["train"][0]
    assert small.corpus[0].as_text() in texts and instruction(q.question) in texts
    assert any(t.endswith(f"So the answer is: {q.answer}.") and q.chain[0].sentence in t for t in texts)
    assert not any(small.questions["test"][0].question in t for t in texts)  # held-out questions stay out


# ------------------------------------------------------------------------------------ the teacher

def test_teacher_with_gold_documents_states_the_chain_then_the_answer(world):
    teacher = WorldTeacher(world)
    for q in world.questions["valid"][:60]:
        noise = [distractor(world, f.relation, {f.object}) for f in q.chain]  # same relations, wrong objects
        gold = [passage(world, f) for f in q.chain]
        reasoning = run(teacher, q, noise + gold[::-1])  # the gold documents ranked last, in reverse
        assert reasoning == [f.sentence for f in q.chain] + [f"So the answer is: {q.answer}."]


def test_teacher_missing_the_last_hop_states_a_wrong_fact_and_answer(world):
    teacher = WorldTeacher(world)
    q = next(q for q in world.questions["test"] if q.hops == 3)
    wrong = distractor(world, q.chain[-1].relation, {q.answer})
    other = distractor(world, "profession", set())
    passages = [passage(world, f) for f in q.chain[:-1]] + [other, wrong]
    reasoning = run(teacher, q, passages)
    assert reasoning[:2] == [q.chain[0].sentence, q.chain[1].sentence]
    assert reasoning[2] == wrong.text  # the best-ranked document of the missing relation
    obj = world.fact_by_sentence(wrong.text).object
    assert reasoning[3:] == [f"So the answer is: {obj}."] and obj != q.answer


def test_teacher_with_no_same_relation_document_states_the_first_new_passage(world):
    teacher = WorldTeacher(world)
    q = next(q for q in world.questions["test"] if q.hops == 2)
    year = next(p for p in world.corpus if world.relation_of(p.text) == "released")
    reasoning = run(teacher, q, [passage(world, q.chain[0]), year])
    value = world.fact_by_sentence(year.text).object
    assert reasoning == [q.chain[0].sentence, year.text, f"So the answer is: {value}."]
    # Astray at an entity without the next relation, it answers with that entity at once.
    reasoning = run(teacher, q, [passage(world, distractor(world, q.chain[0].relation, {q.chain[0].object}))])
    assert len(reasoning) <= 3 and is_final(reasoning[-1]) and extract_answer(reasoning[-1]) != q.answer


def test_teacher_error_rate(world):
    qs = world.questions["train"][:300]
    queries = []
    for q in qs:
        wrong = distractor(world, q.chain[0].relation, {q.chain[0].object})
        queries.append(StepQuery(q.qid, q.question, (passage(world, q.chain[0]), wrong), ()))
    gold = [q.chain[0].sentence for q in qs]
    assert WorldTeacher(world, error_rate=0.0).step(queries) == gold
    always = WorldTeacher(world, error_rate=1.0).step(queries)
    assert all(s != g and world.relation_of(s) == q.chain[0].relation for s, g, q in zip(always, gold, qs))
    noisy = WorldTeacher(world, error_rate=0.3, seed=7).step(queries)
    assert noisy == WorldTeacher(world, error_rate=0.3, seed=7).step(queries)
    assert noisy != WorldTeacher(world, error_rate=0.3, seed=8).step(queries)
    assert 0.2 < sum(s != g for s, g in zip(noisy, gold)) / len(gold) < 0.4
    # With no distractor of the relation retrieved, noise cannot make it go astray.
    lone = [StepQuery(q.qid, q.question, (passage(world, q.chain[0]),), ()) for q in qs[:20]]
    assert WorldTeacher(world, error_rate=1.0).step(lone) == gold[:20]
    with pytest.raises(ConfigError):
        WorldTeacher(world, error_rate=1.5)


def test_teacher_sentences_are_single_sentences_even_for_foreign_passages(world):
    q = world.questions["train"][0]
    foreign = Passage("x1", "Elsewhere", "A foreign passage. It has two sentences.")
    [sentence] = WorldTeacher(world).step([StepQuery(q.qid, q.question, (foreign,), ())])
    assert sentence == "A foreign passage." == first_sentence(sentence)
