import re
import string
from collections import Counter

import pytest

from weighted_mtp.rag.qa_metrics import (accuracy, aggregate, exact_match, f1_score, normalize_answer,
                                         recall_at_k)


# The official SQuAD v1.1 evaluate script's functions, as the reference the module must match.
def squad_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def squad_f1(prediction, ground_truth):
    prediction_tokens = squad_normalize(prediction).split()
    ground_truth_tokens = squad_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


STRINGS = ["The Eiffel Tower!", "eiffel tower", "the cat sat", "cat sat on mat", "3.5", "35",
           "An apple a day", "Theatre of the Absurd", "U.S.A.", "  lots   of\tspace ", "", "a an the",
           "Chicago, Illinois", "chicago", "it's 1,000 km", "1000 km", "Anne-Marie", "the the cat cat"]


def test_normalize_matches_the_squad_script():
    for s in STRINGS:
        assert normalize_answer(s) == squad_normalize(s), s


def test_normalize_hand_cases():
    assert normalize_answer("The Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("3.5") == "35"  # punctuation inside numbers goes too
    assert normalize_answer("Theatre of the Absurd") == "theatre of absurd"  # "the" inside a word stays
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("a an the") == ""
    assert normalize_answer("Anne-Marie") == "annemarie"


def test_f1_matches_the_squad_script_on_every_pair_without_yes_no():
    for p in STRINGS:
        for g in STRINGS:
            assert f1_score(p, [g]) == pytest.approx(squad_f1(p, g)), (p, g)


def test_exact_match():
    assert exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["eiffel tower"]) == 0.0
    assert exact_match("3.5", ["35"]) == 1.0
    assert exact_match("Paris", ["London", "paris."]) == 1.0  # max over golds
    assert exact_match("", ["the"]) == 1.0  # both normalise to ""


def test_f1_by_hand():
    # "cat sat" vs "cat sat on mat": 2 common tokens, P = 2/2, R = 2/4, F1 = 2*1*0.5/1.5
    assert f1_score("the cat sat", ["cat sat on mat"]) == pytest.approx(2 / 3)
    # "the the cat cat" -> [cat, cat]; "cat sat" -> common min counts = 1: P = 1/2, R = 1/2
    assert f1_score("the the cat cat", ["cat sat"]) == pytest.approx(0.5)
    # best of the golds: 2/3 against the second, 0 against the first
    assert f1_score("the cat sat", ["dog", "cat sat on mat"]) == pytest.approx(2 / 3)
    assert f1_score("", [""]) == 0.0  # SQuAD v1.1: no common token means 0, even when both are empty
    assert f1_score("dog", ["cat"]) == 0.0


def test_yes_no_get_no_partial_credit():
    assert f1_score("no, it was not", ["no"]) == 0.0  # squad F1 alone would give 2*(1/4)/(1+1/4) = 0.4
    assert squad_f1("no, it was not", "no") == pytest.approx(0.4)
    assert f1_score("yes", ["yes sir"]) == 0.0
    assert f1_score("Yes.", ["yes"]) == 1.0
    assert f1_score("noanswer", ["no answer"]) == 0.0
    assert exact_match("No", ["no"]) == 1.0


def test_accuracy_is_containment_of_a_normalised_gold():
    assert accuracy("It was the Eiffel Tower, in Paris.", ["eiffel tower"]) == 1.0
    assert accuracy("Eiffel", ["Eiffel Tower"]) == 0.0  # the gold must be inside the prediction
    assert accuracy("born in 1990", ["1990", "nineteen ninety"]) == 1.0
    assert accuracy("version 3.5", ["35"]) == 1.0
    assert accuracy("anything at all", [""]) == 0.0  # an empty gold never counts
    assert accuracy("anything at all", ["the", "at all"]) == 1.0  # "the" normalises to "", "at all" counts


def test_gold_lists_are_checked():
    with pytest.raises(ValueError):
        exact_match("x", [])
    with pytest.raises(TypeError):
        f1_score("x", "x")


def test_recall_at_k():
    retrieved = ["p3", "p1", "p7", "p2", "p9"]
    assert recall_at_k(retrieved, {"p1", "p2"}) == 1.0
    assert recall_at_k(retrieved, {"p1", "p2"}, k=2) == 0.5
    assert recall_at_k(retrieved, ["p1", "p2", "p5"], k=4) == pytest.approx(2 / 3)
    assert recall_at_k(retrieved, {"p1"}, k=0) == 0.0
    assert recall_at_k(["p1", "p1"], {"p1", "p2"}) == 0.5  # a repeated id counts once
    with pytest.raises(ValueError):
        recall_at_k(retrieved, set())
    with pytest.raises(ValueError):
        recall_at_k(retrieved, {"p1"}, k=-1)


def test_aggregate_means():
    rows = [{"em": 1.0, "f1": 1.0}, {"em": 0.0, "f1": 0.5}, {"em": 0.0, "f1": 0.0}]
    assert aggregate(rows) == pytest.approx({"em": 1 / 3, "f1": 0.5})
    with pytest.raises(ValueError):
        aggregate([])
    with pytest.raises(ValueError, match="row 1"):
        aggregate([{"em": 1.0}, {"f1": 1.0}])
