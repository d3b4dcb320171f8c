import json
from pathlib import Path

import pytest

from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.rag.multihop import corpus_from_examples, corpus_pids, load_multihop
from weighted_mtp.rag.passages import Passage

FIXTURES = Path(__file__).parent / "fixtures" / "multihop"
HOTPOT, WIKI, MUSIQUE = FIXTURES / "hotpotqa_dev.json", FIXTURES / "2wiki_dev.json", FIXTURES / "musique_dev.jsonl"


def supporting_titles(example):
    by_pid = {p.pid: p for p in example.passages}
    return [by_pid[pid].title for pid in example.supporting_pids]


def test_hotpotqa():
    first, second = load_multihop(HOTPOT, "hotpotqa")
    assert first.qid == "5a8b57f25542995d1e6f1371" and first.source == "hotpotqa"
    assert first.question == "Were Scott Derrickson and Ed Wood of the same nationality?"
    assert first.answers == ("yes",)
    assert [p.title for p in first.passages] == ["Ed Wood (film)", "Scott Derrickson", "Woodson, Arkansas", "Ed Wood"]
    assert [p.pid for p in first.passages] == [f"5a8b57f25542995d1e6f1371::{i}" for i in range(4)]
    # supporting facts [["Scott Derrickson", 0], ["Ed Wood", 0]]: context positions 1 and 3, in fact order
    assert first.supporting_pids == ("5a8b57f25542995d1e6f1371::1", "5a8b57f25542995d1e6f1371::3")
    # sentences are joined with one space (HotpotQA's own leading spaces are not doubled)
    assert first.passages[1].text == (
        "Scott Derrickson (born July 16, 1966) is an American director, screenwriter and producer. "
        "He lives in Los Angeles, California. He is best known for directing horror films such as \"Sinister\", "
        "\"The Exorcism of Emily Rose\", and \"Deliver Us From Evil\", as well as the 2016 Marvel Cinematic "
        "Universe installment, \"Doctor Strange.\"")
    # two facts from one paragraph give one supporting pid
    assert supporting_titles(second) == ["Kiss and Tell (1945 film)", "Shirley Temple"]
    assert second.answers == ("Chief of Protocol",)
    assert "Chief of Protocol" in second.passages[1].text


def test_2wiki():
    first, second = load_multihop(WIKI, "2wiki")
    assert first.source == "2wiki" and first.qid == "8813f87c0bdd11eba7f7acde48001122"
    assert first.answers == ("Małgorzata Braunek",)
    assert supporting_titles(first) == ["Polish-Russian War (film)", "Xawery Żuławski"]
    assert first.passages[0].text.endswith("He is the son of actress Małgorzata Braunek and director Andrzej Żuławski.")
    assert "In 1995 he graduated from National Film School in Łódź. He is" in first.passages[0].text
    assert supporting_titles(second) == ["Blind Shaft", "The Mask of Fu Manchu"]
    assert second.supporting_pids == ("4bfa1a2c0bdd11eba7f7acde48001122::1", "4bfa1a2c0bdd11eba7f7acde48001122::0")


def test_musique():
    first, second = load_multihop(MUSIQUE, "musique")
    assert first.source == "musique" and first.qid == "2hop__252311_366220"
    assert first.answers == ("Miquette Giraudy",)
    assert second.answers == ("Bern", "Berne", "Bern, Switzerland")  # answer, then aliases
    assert [p.pid for p in first.passages] == [f"2hop__252311_366220::{i}" for i in range(4)]
    assert first.supporting_pids == ("2hop__252311_366220::0", "2hop__252311_366220::2")
    assert supporting_titles(first) == ["Steve Hillage", "Green (Steve Hillage album)"]
    assert supporting_titles(second) == ["Bern", "Ursula Andress"]
    assert second.passages[2] == Passage("2hop__823584_776926::2", "Dr. No (film)",
                                         "Dr. No is a 1962 spy film starring Sean Connery and Ursula Andress, "
                                         "directed by Terence Young.")


def test_auto_detects_each_format():
    for path, fmt in ((HOTPOT, "hotpotqa"), (WIKI, "2wiki"), (MUSIQUE, "musique")):
        examples = load_multihop(path)
        assert len(examples) == 2 and {e.source for e in examples} == {fmt}
        assert examples == load_multihop(path, fmt)


def test_jsonl_container_of_a_hotpot_file(tmp_path):
    records = json.loads(HOTPOT.read_text())
    path = tmp_path / "hotpot.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert load_multihop(path) == load_multihop(HOTPOT)


def write_json(tmp_path, records, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def test_malformed_json_list_names_the_record(tmp_path):
    records = json.loads(HOTPOT.read_text())
    del records[1]["context"]
    path = write_json(tmp_path, records)
    with pytest.raises(DataError, match=r"bad\.json: record 1 \(_id '5a8c7595554299585d9e36b6'\): missing field 'context'"):
        load_multihop(path, "hotpotqa")


def test_hotpot_errors(tmp_path):
    records = json.loads(HOTPOT.read_text())
    bad_fact = [dict(records[0], supporting_facts=[["Scott Derrickson", "0"]])]
    with pytest.raises(DataError, match=r"record 0 .*supporting_facts\[0\] must be \[title, sentence index\]"):
        load_multihop(write_json(tmp_path, bad_fact), "hotpotqa")
    missing_title = [dict(records[0], supporting_facts=[["Tim Burton", 0]])]
    with pytest.raises(DataError, match="'Tim Burton' is not among the context titles"):
        load_multihop(write_json(tmp_path, missing_title), "hotpotqa")
    bad_context = [dict(records[0], context=[["Ed Wood", "one sentence"]])]
    with pytest.raises(DataError, match=r"context\[0\] must be \[title, \[sentence, \.\.\.\]\]"):
        load_multihop(write_json(tmp_path, bad_context), "hotpotqa")
    with pytest.raises(DataError, match="field 'answer' must be str, got int"):
        load_multihop(write_json(tmp_path, [dict(records[0], answer=3)]), "hotpotqa")
    with pytest.raises(DataError, match=r"record 1 \(_id '5a8b57f25542995d1e6f1371'\): duplicate id"):
        load_multihop(write_json(tmp_path, [records[0], records[0]]), "hotpotqa")
    with pytest.raises(DataError, match="missing field 'evidences'"):  # a HotpotQA file read as 2Wiki
        load_multihop(HOTPOT, "2wiki")


def test_malformed_jsonl_names_the_line(tmp_path):
    lines = MUSIQUE.read_text().splitlines()
    record = json.loads(lines[1])
    del record["paragraphs"][1]["is_supporting"]
    path = tmp_path / "bad.jsonl"
    path.write_text(lines[0] + "\n\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:3 \(id '2hop__823584_776926'\): paragraphs\[1\]: "
                                        r"missing field 'is_supporting'"):
        load_multihop(path, "musique")
    path.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        load_multihop(path)
    record = json.loads(lines[0])
    record["paragraphs"][2]["idx"] = 0
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1 .*paragraphs\[2\]: duplicate idx 0"):
        load_multihop(path)


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_multihop(tmp_path / "missing.json")
    with pytest.raises(DataError, match="no examples"):
        load_multihop(write_json(tmp_path, []))
    with pytest.raises(DataError, match="cannot tell the format"):
        load_multihop(write_json(tmp_path, [{"question": "q", "answer": "a"}]))
    with pytest.raises(ConfigError, match="known: auto, hotpotqa, 2wiki, musique"):
        load_multihop(HOTPOT, "squad")


def test_corpus_deduplicates_by_title_and_text():
    examples = load_multihop(HOTPOT)
    shared = examples[0].passages[3]  # "Ed Wood", also in a second example under another pid
    copy = Passage("q3::0", shared.title, shared.text)
    other = Passage("q3::1", "Ed Wood", "A different paragraph about Ed Wood.")
    third = type(examples[0])(qid="q3", question="?", answers=("x",), supporting_pids=("q3::0",),
                              passages=(copy, other), source="hotpotqa")
    corpus = corpus_from_examples([*examples, third])
    assert len(corpus) == 4 + 4 + 1  # the copy is dropped, the same title with other text is kept
    assert [p.pid for p in corpus][-1] == "q3::1"
    assert len({p.pid for p in corpus}) == len(corpus)
    mapping = corpus_pids([*examples, third])
    assert mapping["q3::0"] == shared.pid and mapping["q3::1"] == "q3::1"
    assert mapping[examples[1].supporting_pids[0]] == examples[1].supporting_pids[0]
    corpus_ids = {p.pid for p in corpus}
    assert all(mapping[pid] in corpus_ids for ex in [*examples, third] for pid in ex.supporting_pids)


def test_corpus_rejects_one_pid_for_two_paragraphs():
    examples = load_multihop(HOTPOT)
    clash = type(examples[0])(qid=examples[0].qid, question="?", answers=("x",), supporting_pids=(),
                              passages=(Passage(examples[0].passages[0].pid, "Other", "text"),), source="hotpotqa")
    with pytest.raises(DataError, match="names two different paragraphs"):
        corpus_from_examples([*examples, clash])
