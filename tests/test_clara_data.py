"""CLaRa's upstream JSONL formats (strict reading, file:line errors) and the embedded CLaRa data."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from weighted_mtp.clara.data import (Stage1Example, Stage2Example, Stage3Example, read_stage, validate_file,
                                     write_stage)
from weighted_mtp.clara.embedded import build_clara_data, write_clara_data
from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.rag.passages import read_passages
from weighted_mtp.world.world import RELATIONS, SPLITS, build_world

QA = Stage1Example("qa", ("Who wrote Hamlet?", "When?"), ("Shakespeare", "1600"), "Hamlet was written by Shakespeare in 1600.")
PARA = Stage1Example("paraphrase", (), ("In 1600 Shakespeare wrote Hamlet.",), "Hamlet was written by Shakespeare in 1600.")
S2 = Stage2Example("Who wrote Hamlet?", ("doc a", "doc b", "doc c"), "Shakespeare", ("Shakespeare", "W. Shakespeare"))
S3 = Stage3Example("Who wrote Hamlet?", ("doc a", "doc b", "doc c"), "Shakespeare", ("Shakespeare",), (2, 0))
GOOD = {1: QA.to_json(), 2: S2.to_json(), 3: S3.to_json()}


def lines_file(tmp_path, *records, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------- formats

def test_stage1_targets_are_upstreams():
    assert QA.target() == "Question: Who wrote Hamlet?\nAnswer: Shakespeare\nQuestion: When?\nAnswer: 1600"
    assert PARA.target() == "In 1600 Shakespeare wrote Hamlet."


def test_records_are_upstreams_field_layout():
    assert QA.to_json() == {"data_type": "qa", "question": ["Who wrote Hamlet?", "When?"],
                            "answers": ["Shakespeare", "1600"], "docs": [QA.doc]}
    assert PARA.to_json() == {"data_type": "paraphrase", "question": "", "answers": [PARA.answers[0]], "docs": [PARA.doc]}
    assert S3.to_json() == {"question": "Who wrote Hamlet?", "docs": ["doc a", "doc b", "doc c"], "answer": "Shakespeare",
                            "golden_answers": ["Shakespeare"], "pos_index": [2, 0]}


@pytest.mark.parametrize("stage,examples", [(1, [QA, PARA, QA]), (2, [S2, S2]), (3, [S3])])
def test_round_trip(tmp_path, stage, examples):
    path = write_stage(tmp_path / f"s{stage}.jsonl", examples)
    assert read_stage(path, stage) == examples
    assert not list(tmp_path.glob("*.tmp"))


def test_validate_file_summaries(tmp_path):
    assert validate_file(write_stage(tmp_path / "1.jsonl", [QA, PARA, QA]), 1) == \
        "ok: 3 stage-1 examples (2 qa with 4 question/answer pairs, 1 paraphrase)"
    assert validate_file(write_stage(tmp_path / "2.jsonl", [S2] * 120), 2) == "ok: 120 stage-2 examples, 3 docs each"
    short = Stage2Example("q?", ("only",), "a", ("a",))
    assert validate_file(write_stage(tmp_path / "2b.jsonl", [S2, short]), 2) == "ok: 2 stage-2 examples, 1-3 docs each"
    assert validate_file(write_stage(tmp_path / "3.jsonl", [S3, S3]), 3) == "ok: 2 stage-3 examples, 3 docs each, 4 positives"


def test_upstream_style_stage3_line_with_an_answers_list(tmp_path):
    line = ('{"question": "Who wrote Hamlet?", "docs": ["Macbeth is a play.", "Hamlet is a play by Shakespeare."], '
            '"answers": ["William Shakespeare", "Shakespeare"], "pos_index": [1]}')
    [ex] = read_stage(lines_file(tmp_path, line), 3)
    assert ex == Stage3Example("Who wrote Hamlet?", ("Macbeth is a play.", "Hamlet is a play by Shakespeare."),
                               "William Shakespeare", ("William Shakespeare", "Shakespeare"), (1,))


def test_answer_fallbacks_follow_upstreams_loader(tmp_path):
    base = {"question": "q?", "docs": ["d"]}
    path = lines_file(tmp_path, {**base, "golden_answers": ["g1", "g2"]},
                      {**base, "answer": "teacher's answer", "gold_answer": "gold"},  # upstream's stage-2 dataset
                      {**base, "answer": "a", "answers": ["x", "y"]},  # `answer` wins, as upstream
                      {"question": "q?", "context": ["c1", "c2"], "answer": "a"})  # upstream's docs alias
    got = read_stage(path, 2)
    assert [(e.answer, e.gold_answers) for e in got] == [
        ("g1", ("g1", "g2")), ("teacher's answer", ("gold",)), ("a", ("x", "y")), ("a", ("a",))]
    assert got[3].docs == ("c1", "c2")


def test_empty_pos_index_only_when_allowed(tmp_path):
    no_pos = {"question": "q?", "docs": ["d0", "d1"], "answer": "a"}
    path = lines_file(tmp_path, GOOD[3], {**no_pos, "pos_index": []}, no_pos)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: empty 'pos_index'"):
        read_stage(path, 3)
    assert [e.pos_index for e in read_stage(path, 3, allow_empty_pos=True)] == [(2, 0), (), ()]
    assert validate_file(path, 3, allow_empty_pos=True) == "ok: 3 stage-3 examples, 2-3 docs each, 2 positives (2 without)"


S2_BASE = {"question": "q?", "docs": ["d0", "d1"], "answer": "a"}
S1_BASE = {"data_type": "qa", "question": ["q1?", "q2?"], "answers": ["a1", "a2"], "docs": ["d"]}
BAD = [  # (stage, bad line, message pattern)
    (2, '{"question": "q?", "docs": ["d"], ', r"invalid JSON"),
    (2, '["q?", ["d"], "a"]', r"expected a JSON object, got list"),
    (1, "[1, 2]", r"expected a JSON object, got list"),
    (2, {"docs": ["d"], "answer": "a"}, r"missing field 'question'"),
    (2, {"question": "q?", "answer": "a"}, r"missing field 'docs'"),
    (2, {"question": "q?", "docs": ["d"]}, r"missing field 'answer'"),
    (1, {k: v for k, v in S1_BASE.items() if k != "answers"}, r"missing field 'answers'"),
    (2, {**S2_BASE, "question": 7}, r"'question' must be a string, got int"),
    (2, {**S2_BASE, "docs": "d0"}, r"'docs' must be a list of strings, got str"),
    (2, {**S2_BASE, "docs": ["d0", 3]}, r"'docs'\[1\] must be a string, got int"),
    (2, {**S2_BASE, "answer": ["a"]}, r"'answer' must be a string, got list"),
    (2, {**S2_BASE, "docs": []}, r"'docs' is empty"),
    (2, {**S2_BASE, "docs": ["d0", "  "]}, r"'docs'\[1\] is empty"),
    (1, {**S1_BASE, "answers": ["a1"]}, r"'question' has 2 items but 'answers' has 1"),
    (1, {**S1_BASE, "docs": ["d", "e"]}, r"exactly 1 document .* got 2"),
    (1, {**S1_BASE, "docs": []}, r"'docs' is empty"),
    (1, {**S1_BASE, "data_type": "summary"}, r"'data_type' must be one of \['qa', 'paraphrase'\], got 'summary'"),
    (1, {"data_type": "paraphrase", "question": "", "answers": ["p1", "p2"], "docs": ["d"]}, r"exactly one paraphrase"),
    (1, {"data_type": "paraphrase", "question": "why?", "answers": ["p"], "docs": ["d"]}, r"paraphrase record has"),
    (1, S2_BASE, r"looks like a stage-2/3 record \(use --stage 2 or 3\)"),
    (2, S1_BASE, r"looks like a stage-1 record \(has data_type.*\); use --stage 1"),
    (3, {**S1_BASE, "data_type": "paraphrase", "question": ""}, r"looks like a stage-1 record"),
    (2, {"question": "q?", "docs": ["d"], "gold_answer": "a"},
     r"'gold_answer' but no 'answer': upstream's loader rejects such records too .*add \"answer\""),
    (3, {**S2_BASE, "pos_index": [2]}, r"pos_index 2 is out of range for 2 docs \(0\.\.1\)"),
    (3, {**S2_BASE, "pos_index": [-1]}, r"pos_index -1 is out of range"),
    (3, {**S2_BASE, "pos_index": [True]}, r"'pos_index' must be a list of integers"),
    (3, {**S2_BASE, "pos_index": "0"}, r"'pos_index' must be a list of integers"),
    (3, {**S2_BASE, "pos_index": [1, 1]}, r"'pos_index' repeats an index"),
    (3, S2_BASE, r"missing 'pos_index'"),
]


@pytest.mark.parametrize("stage,bad,pattern", BAD)
def test_first_bad_line_is_named_with_file_and_line(tmp_path, stage, bad, pattern):
    path = lines_file(tmp_path, GOOD[stage], "", bad, "not even json")  # line 2 is blank
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: .*{pattern}"):
        read_stage(path, stage)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: "):
        validate_file(path, stage)


def test_missing_or_empty_file_and_bad_stage(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_stage(tmp_path / "nope.jsonl", 2)
    with pytest.raises(DataError, match="no stage-2 examples"):
        read_stage(lines_file(tmp_path, ""), 2)
    with pytest.raises(ConfigError, match="stage must be 1, 2 or 3, got 4"):
        read_stage(lines_file(tmp_path, GOOD[2]), 4)


def test_write_refuses_mixed_or_invalid_examples(tmp_path):
    with pytest.raises(DataError, match="one stage class"):
        write_stage(tmp_path / "x.jsonl", [S2, S3])
    bad = Stage1Example("qa", ("q1?", "q2?"), ("a1",), "d")
    with pytest.raises(DataError, match=r"x\.jsonl:2: refusing to write .* 'question' has 2 items"):
        write_stage(tmp_path / "x.jsonl", [QA, bad])
    assert not (tmp_path / "x.jsonl").exists() and not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------------------------ embedded data

# Written out by hand (not imported) so a changed template fails here: question -> relation.
ASKS = {"director": "Who directed {}?", "author": "Who wrote {}?", "birthplace": "Where was {} born?",
        "mother": "Who is the mother of {}?", "employer": "Which company does {} work for?",
        "founder": "Who founded {}?", "headquarters": "Where is {} headquartered?",
        "country": "Which country is {} in?", "released": "When was {} released?",
        "published": "When was {} published?", "profession": "What is the profession of {}?",
        "population": "What is the population of {}?", "industry": "What does {} make?"}


def parse_question(text):
    for rel, template in ASKS.items():
        head, tail = template.split("{}")
        if text.startswith(head) and text.endswith(tail):
            return text[len(head):len(text) - len(tail)], rel
    raise AssertionError(f"no template asks {text!r}")


@pytest.fixture(scope="module")
def world():
    return build_world(0)


@pytest.fixture(scope="module")
def data(world):
    return build_clara_data(world, k=3, n_candidates=8, seed=0)


def subject_type(world, entity):
    return next(RELATIONS[f.relation].subject for f in world.facts if f.subject == entity)


def test_sizes_and_documents(world, data):
    assert {s: len(data[s]["documents"]) for s in SPLITS} == {"train": 600, "valid": 80, "test": 80}
    for split in SPLITS:
        for doc in data[split]["documents"]:
            facts = [f for f in world.facts if f.subject == doc.pid]
            assert doc.pid == doc.title and len(doc.text.split()) <= 60
            stated = [f for f in facts if f.sentence in doc.text]
            assert len(stated) >= 2 and doc.text == " ".join(sorted(
                (f.sentence for f in stated), key=lambda s: doc.text.index(s)))
        assert len(data[split]["stage1"]) == 3 * len(data[split]["documents"])
        n_facts = sum(len([f for f in world.facts if f.subject == d.pid]) for d in data[split]["documents"])
        assert len(data[split]["stage2"]) == len(data[split]["stage3"]) == n_facts


def test_splits_are_disjoint_by_entity(data):
    entities = {s: {d.pid for d in data[s]["documents"]} for s in SPLITS}
    assert not (entities["train"] & entities["valid"] or entities["train"] & entities["test"]
                or entities["valid"] & entities["test"])
    for split in SPLITS:
        texts = {d.text for d in data[split]["documents"]}
        assert {e.doc for e in data[split]["stage1"]} == texts
        for ex in data[split]["stage2"] + data[split]["stage3"]:
            assert parse_question(ex.question)[0] in entities[split]


def test_stage1_covers_every_fact(world, data):
    for doc, simple, joint, para in zip(data["train"]["documents"], *[data["train"]["stage1"][i::3] for i in range(3)]):
        facts = [f for f in world.facts if f.subject == doc.pid]
        assert (simple.data_type, joint.data_type, para.data_type) == ("qa", "qa", "paraphrase")
        assert simple.doc == joint.doc == para.doc == doc.text
        assert [parse_question(q) for q in simple.questions] == [(f.subject, f.relation) for f in sorted(
            facts, key=lambda f: doc.text.index(f.sentence))]
        assert list(simple.answers) == [world.fact(doc.pid, rel).object for _, rel in map(parse_question, simple.questions)]
        assert list(joint.answers) == [f"{a}; {b}" for a, b in zip(simple.answers, simple.answers[1:])]
        assert joint.questions[0].startswith(simple.questions[0][:-1] + ", and ")
        text = para.answers[0]
        assert text != doc.text and all(f.object in text and f.sentence not in text for f in facts)
        in_doc = sorted(facts, key=lambda f: doc.text.index(f.sentence))
        assert sorted(facts, key=lambda f: text.index(f.object)) != in_doc  # reordered, not only reworded


def test_paraphrase_order_differs_and_is_seeded(world, data):
    again = build_clara_data(world, k=3, n_candidates=8, seed=0)
    assert again == data
    other = build_clara_data(world, k=3, n_candidates=8, seed=1)
    assert {d.pid for d in other["test"]["documents"]} != {d.pid for d in data["test"]["documents"]}


@pytest.mark.parametrize("stage", [2, 3])
def test_gold_document_answers_and_distractors_do_not(world, data, stage):
    for split in SPLITS:
        examples = data[split][f"stage{stage}"]
        docs = {d.text: d for s in SPLITS for d in data[s]["documents"]}
        positions = Counter()
        for ex in examples:
            subject, rel = parse_question(ex.question)
            fact = world.fact(subject, rel)
            assert ex.answer == fact.object and ex.gold_answers == (fact.object,)
            assert len(ex.docs) == (3 if stage == 2 else 8) and len(set(ex.docs)) == len(ex.docs)
            gold = [i for i, text in enumerate(ex.docs) if docs[text].pid == subject]
            assert len(gold) == 1 and fact.sentence in ex.docs[gold[0]]
            if stage == 3:
                assert ex.pos_index == (gold[0],)
            positions[gold[0]] += 1
            for i, text in enumerate(ex.docs):
                if i == gold[0]:
                    continue
                other = docs[text].pid
                assert subject_type(world, other) == subject_type(world, subject)
                rival = world.fact(other, rel)
                assert rival is None or rival.object != ex.answer
                assert ex.answer not in text
        assert len(positions) == len(examples[0].docs)  # the gold's slot is random


def test_train_distractors_come_from_train(data):
    train_texts = {d.text for d in data["train"]["documents"]}
    assert all(set(ex.docs) <= train_texts for ex in data["train"]["stage3"])


def test_written_files_validate_and_read_back(world, tmp_path):
    out = write_clara_data(tmp_path / "clara", world, k=2, n_candidates=4, train_docs=100, valid_docs=20, test_docs=20)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["documents.jsonl"] + [f"stage{n}_{s}.jsonl" for n in (1, 2, 3) for s in SPLITS])
    assert len(read_passages(out / "documents.jsonl")) == 140
    data = build_clara_data(world, k=2, n_candidates=4, train_docs=100, valid_docs=20, test_docs=20)
    for split in SPLITS:
        assert validate_file(out / f"stage1_{split}.jsonl", 1).startswith(f"ok: {3 * len(data[split]['documents'])} stage-1")
        assert validate_file(out / f"stage2_{split}.jsonl", 2).endswith("stage-2 examples, 2 docs each")
        assert validate_file(out / f"stage3_{split}.jsonl", 3).endswith("stage-3 examples, 4 docs each, "
                                                                         f"{len(data[split]['stage3'])} positives")
        for stage in (1, 2, 3):
            assert read_stage(out / f"stage{stage}_{split}.jsonl", stage) == data[split][f"stage{stage}"]


def test_bad_sizes_are_config_errors(world):
    with pytest.raises(ConfigError, match="distractor documents"):
        build_clara_data(world, n_candidates=300)
    with pytest.raises(ConfigError, match="'k' must be an integer >= 1"):
        build_clara_data(world, k=0)
    with pytest.raises(ConfigError, match="leaves none for train"):
        build_clara_data(world, valid_docs=500, test_docs=500)


def test_base_pretraining_corpus_has_every_name_but_no_fact(world):
    """The embedded base learns the documents' language from counterfactual copies of their world:
    none of the facts CLaRa is asked about is in its corpus (else the generator answers from its
    weights and the memory vectors carry nothing it needs), yet every name is, as subject and as
    object (a name the frozen base never saw keeps a random embedding it can neither read nor
    write), and so is every relation template."""
    from weighted_mtp.clara.base import pretraining_texts

    texts = pretraining_texts(world_seed=0, shuffles=4)
    corpus = " ".join(texts)
    assert not [f.sentence for f in world.facts if f.sentence in corpus]
    assert not [f.subject for f in world.facts if f.subject not in corpus]
    objects = {f.object for f in world.facts}
    assert len([o for o in objects if o not in corpus]) <= len(objects) // 50  # a rare object may only ever be true
    assert len(texts) > 3 * len({f.subject for f in world.facts})  # several profiles per subject
    assert pretraining_texts(world_seed=0, shuffles=4) == texts  # deterministic: the base's cache key relies on it
    sample = {f.relation: f for f in world.facts}
    for fact in sample.values():  # the template around the names, e.g. " was directed by "
        middle = fact.sentence.replace(fact.subject, "\0").replace(fact.object, "\0").split("\0")[1]
        assert middle.strip() and middle in corpus, fact.relation
