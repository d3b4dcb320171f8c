"""clara.cloze: extractive questions from any text, by hand: which span is the answer, how the
wh-phrase replaces it, which sentences are skipped, and the generator over chunks."""

from __future__ import annotations

import pytest

from weighted_mtp.clara.cloze import ClozeQAGenerator, answer_spans, cloze_question
from weighted_mtp.clara.pdf import Chunk
from weighted_mtp.clara.qa_pairs import QAPair, generate_qa
from weighted_mtp.errors import ConfigError, WMTPError

CASES = [  # sentence, answer, question
    ("The bridge was opened in 1921 by a group of engineers from Leeds.", "1921",
     "The bridge was opened in which year by a group of engineers from Leeds?"),
    ("Nobody expected the 1,200 copies to sell out within a week!", "1,200",
     "Nobody expected how many copies to sell out within a week?"),
    ("Marie Curie was born in Warsaw on November 7, 1867.", "November 7, 1867", "Marie Curie was born in Warsaw when?"),
    ("The library opened to the public in March 1954 after a long delay.", "March 1954",
     "The library opened to the public when after a long delay?"),
    ("A ticket for the ferry costs $12.50 in the summer.", "$12.50", "A ticket for the ferry costs how much in the summer?"),
    ("Dolan Mirs repaired the old clock in the town hall.", "Dolan Mirs", "Who repaired the old clock in the town hall?"),
    ("The committee met with Dr. Ossa Ternel to discuss the budget.", "Dr. Ossa Ternel",
     "The committee met with whom to discuss the budget?"),
    ("Most visitors arrive by train from Vienna.", "Vienna", "Most visitors arrive by train from where?"),
    ("The museum is located in Paris near the river.", "Paris", "The museum is located where near the river?"),
    ("The river flows slowly into the North Sea.", "North Sea", "The river flows slowly into where?"),
    ("After the war, the Bank of England raised its rates.", "Bank of England",
     "After the war, what raised its rates?"),
    ("The bridge was painted 3 times last century.", "3", "The bridge was painted how many times last century?"),
    ("The station clock was a gift from Thomas Grell, a local watchmaker.", "Thomas Grell",
     "The station clock was a gift from whom, a local watchmaker?"),
    ("Every August the town holds a boat festival.", "August", "Every which month the town holds a boat festival?"),
    ("The harbour is busiest in July and quiet in winter.", "July",
     "The harbour is busiest in which month and quiet in winter?"),
]


@pytest.mark.parametrize("sentence,answer,question", CASES)
def test_cloze_pairs_by_hand(sentence, answer, question):
    pair = ClozeQAGenerator().pair(sentence, "c7")
    assert pair == QAPair(question, answer, "c7", pair.keywords)
    assert answer in sentence and answer not in pair.question


def test_spans_do_not_overlap_and_follow_priority():
    s = "Marie Curie was born in Warsaw on November 7, 1867 and moved to Paris in 1891."
    spans = [(sp.kind, sp.text(s)) for sp in answer_spans(s)]
    assert spans == [("date", "November 7, 1867"), ("year", "1891"), ("name", "Marie Curie"), ("name", "Warsaw"),
                     ("name", "Paris")]  # the year inside the date is the date's; the sentence start is no name
    assert [sp.text("Yesterday the rain stopped.") for sp in answer_spans("Yesterday the rain stopped.")] == []
    assert cloze_question(s, answer_spans(s)[1]) == ("Marie Curie was born in Warsaw on November 7, 1867 and moved to "
                                                     "Paris in which year?")


@pytest.mark.parametrize("sentence", [
    "Introduction",  # a heading: no sentence end
    "It was opened in 1921 by the mayor.",  # a pronoun subject: the question would not say what "it" is
    "The cat sat on the warm mat all day.",  # nothing to ask about
    "In 1921 and again in 1921 the bridge was closed.",  # the answer twice: the question would give it away
    "Too short in 1921.",
])
def test_sentences_without_a_fair_question_are_skipped(sentence):
    assert ClozeQAGenerator().pair(sentence) is None


def test_generator_over_chunks_keeps_n_per_chunk_in_order():
    chunks = [Chunk("c0", 1, "", ("The mill was built in 1820 by the river.", "It burned down in 1901.",
                                   "The new mill employed 45 workers from Halden.", "Trade grew after 1850 too.")),
              Chunk("c1", 2, "The harbour froze in 1963. Nothing else happened here at all.")]  # no sentence bookkeeping
    pairs = ClozeQAGenerator(n_per_chunk=2).generate(chunks)
    # A name comes before a bare number (priority date > year > money > name > number).
    assert [(p.chunk_id, p.answer) for p in pairs] == [("c0", "1820"), ("c0", "Halden"), ("c1", "1963")]
    assert pairs[1].question == "The new mill employed 45 workers from where?"
    assert [p.answer for p in ClozeQAGenerator(n_per_chunk=1).generate(chunks)] == ["1820", "1963"]
    with pytest.raises(ConfigError, match="n_per_chunk"):
        ClozeQAGenerator(n_per_chunk=0)
    with pytest.raises(WMTPError, match="ClozeQAGenerator found no question in 1 chunks"):
        generate_qa([Chunk("c0", 1, "The cat sat on the warm mat all day.")], ClozeQAGenerator())
