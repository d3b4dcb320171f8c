"""clara.pdf / qa_pairs / report: a real PDF written by matplotlib and read back by pypdf, the
chunker's sentence bookkeeping, QA pairs from the world and from a chat teacher, the metrics by
hand and the markdown report."""

from __future__ import annotations

import json
import re
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from weighted_mtp.clara.pdf import (CHAR_WIDTH_EM, MARGIN_IN, Chunk, chunk_text, chunks_to_passages,
                                    extract_text, page_sentences, render_pdf, split_sentences)
from weighted_mtp.clara.qa_pairs import (WORLD_QUESTIONS, QAPair, TeacherQAGenerator, WorldQAGenerator, generate_qa,
                                         parse_qa_reply, qa_messages, read_qa_jsonl, write_qa_jsonl)
from weighted_mtp.clara.report import compression_metrics, keyword_overlap, render_markdown, scenario_metrics
from weighted_mtp.errors import ConfigError, DataError, WMTPError

SUBJECTS = ["Dolan Mirs", "The Grent", "Vantor Shipping", "Zanu", "Kelvar Press", "Dr. Ossa Ternel", "Brimhold"]
FILLERS = [
    "{s} was founded in 1921 by a group of state-of-the-art engineers from St. Louis.",
    "Its first product cost $3.50 and sold well, e.g. in the northern provinces.",
    "Critics called it \"well-made\" and \"long-lasting\" for more than forty years.",
    "Nobody expected the 1,200 copies to sell out within a week!",
    "Was it luck, or was it the work of Dr. Pell and her team?",
    "Today {s} is remembered mostly for its role in the history of the region.",
    "The archive holds letters, maps and a ledger of every sale between 1930 and 1961.",
]


def _paragraphs(n: int = 21) -> list[tuple[str, list[str]]]:
    """n (title, sentences) paragraphs of 1 to 7 sentences, some many lines long."""
    out = []
    for i in range(n):
        s = SUBJECTS[i % len(SUBJECTS)]
        count = 1 + (i * 3) % 7
        out.append((f"{i + 1}. About {s}", [FILLERS[(i + j) % len(FILLERS)].format(s=s) for j in range(count)]))
    return out


def _norm(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    paragraphs = _paragraphs()
    texts = [(t, " ".join(ss)) for t, ss in paragraphs]
    path = render_pdf(texts, tmp_path_factory.mktemp("pdf") / "doc.pdf", per_page=7)
    return paragraphs, path


# ------------------------------------------------------------------------------- pdf round trip

def test_render_extract_finds_every_paragraph_on_its_page(rendered, tmp_path):
    paragraphs, path = rendered
    pages = extract_text(path)
    assert len(pages) == 3
    for i, (title, sentences) in enumerate(paragraphs):
        page = _norm(pages[i // 7])
        assert _norm(title) in page
        for sentence in sentences:
            assert sentence in page, (i, sentence)
        assert _norm(" ".join(sentences)) in page  # in order, nothing between the sentences
        others = [_norm(p) for k, p in enumerate(pages) if k != i // 7]
        assert all(f"{title} " not in p for p in others)
    # The same input gives the same bytes (no creation date, fixed fonts).
    # Same file name: the stem is the PDF's title.
    again = render_pdf([(t, " ".join(ss)) for t, ss in paragraphs], tmp_path / "doc.pdf", per_page=7)
    assert again.read_bytes() == path.read_bytes()
    import pypdf

    meta = pypdf.PdfReader(path).metadata
    assert "/CreationDate" not in meta and meta["/Title"] == "doc"  # a date would differ run to run


def test_lines_stay_inside_the_page(rendered):
    import pypdf

    _, path = rendered
    for page in pypdf.PdfReader(path).pages:
        width = float(page.mediabox.width)
        spans = []

        def visit(text, cm, tm, font, size):
            if text.strip():
                spans.append((cm[4] + tm[4], len(text.rstrip("\n")) * CHAR_WIDTH_EM * size))

        page.extract_text(visitor_text=visit)
        assert spans
        for x, w in spans:
            assert x >= MARGIN_IN * 72 - 1 and x + w <= width - MARGIN_IN * 72 + 1, (x, w, width)


def test_pdf_chunks_recover_every_sentence_and_page(rendered):
    paragraphs, path = rendered
    pages = extract_text(path)
    expected = [(i // 7 + 1, s) for i, (t, ss) in enumerate(paragraphs) for s in [t, *ss]]
    assert page_sentences(pages) == expected  # headings are sentences of their own
    chunks = chunk_text(pages, max_words=25)
    flat = [s for c in chunks for s in c.sentences]
    assert flat == [s for _, s in expected]
    page_of = dict(((s, n), p) for n, (p, s) in enumerate(expected))
    n = 0
    for c in chunks:
        assert c.text == " ".join(c.sentences)
        assert len(c.text.split()) <= 25 or len(c.sentences) == 1
        assert c.page == page_of[(c.sentences[0], n)]
        n += len(c.sentences)
    assert {c.page for c in chunks} == {1, 2, 3}
    assert [c.cid for c in chunks] == [f"c{i}" for i in range(len(chunks))]
    passages = chunks_to_passages(chunks)
    assert [(p.pid, p.text) for p in passages] == [(c.cid, c.text) for c in chunks]


def test_a_paragraph_longer_than_a_page_continues(tmp_path):
    sentences = [f"Sentence {i} says that Brimhold-{i} exports {i * 7} tons of cheese and tea to Zanu every year."
                 for i in range(70)]
    # "well-made" straddles the 80th column: wrapped at its hyphen it would come back as "wellmade".
    compound = "The " + "very " * 14 + "well-made ship was long-lasting."
    assert len("The " + "very " * 14 + "well-") <= 80 < len("The " + "very " * 14 + "well-made")
    path = render_pdf([("Long", " ".join(sentences)), ("After", f"{compound} The end.")], tmp_path / "long.pdf")
    pages = extract_text(path)
    assert len(pages) == 2
    got = page_sentences(pages)
    assert [s for _, s in got] == ["Long", *sentences, "After", compound, "The end."]
    # A sentence starts on page 2 iff all of it is there (the one cut by the page end starts on 1).
    assert [p for p, _ in got] == [2 if s in _norm(pages[1]) else 1 for _, s in got]
    assert sum(s not in _norm(pages[0]) and s not in _norm(pages[1]) for _, s in got) == 1


def test_hyphenation_wraps_and_breaks():
    pages = ["An informa-\ntion retrieval sys-\ntem is state-of-the-\nart. Jean-\nPaul Sartre agreed.\n"
             "Heading\nThe Grent was directed by\nDolan Mirs in the city of St.\nLouis.",
             "It goes on and\nends here.  Lots   of\tspace.\n\nNew paragraph"]
    assert page_sentences(pages) == [
        (1, "An information retrieval system is state-of-the-art."), (1, "Jean-Paul Sartre agreed."),
        (1, "Heading"), (1, "The Grent was directed by Dolan Mirs in the city of St. Louis."),
        (2, "It goes on and ends here."), (2, "Lots of space."), (2, "New paragraph")]
    assert split_sentences("He met J. Smith in the U.S. Army. It cost $3.50 (approx.) 100 dollars! \"Why?\" Yes.") == [
        "He met J. Smith in the U.S. Army.", "It cost $3.50 (approx.) 100 dollars!", "\"Why?\"", "Yes."]


def test_chunk_packing_by_hand():
    words = [5, 4, 3, 8, 15, 2]
    sentences = [" ".join(["w%d" % i] * (n - 1) + ["end%d." % i]).capitalize() for i, n in enumerate(words)]
    # Pages of wrapped text, sentence i on page 1 for i < 3; each page wraps at 30 characters.
    pages = ["\n".join(textwrap.wrap(" ".join(part), 30)) for part in (sentences[:3], sentences[3:])]
    chunks = chunk_text(pages, max_words=12)
    assert [c.sentences for c in chunks] == [tuple(sentences[:3]), (sentences[3],), (sentences[4],), (sentences[5],)]
    assert [c.page for c in chunks] == [1, 2, 2, 2]
    overlapped = chunk_text(pages, max_words=12, overlap_sentences=1)
    idx = [[sentences.index(s) for s in c.sentences] for c in overlapped]
    assert idx == [[0, 1, 2], [2, 3], [4], [5]]  # s3 + s4 would be 23 words, so s3 is not repeated
    assert [c.page for c in overlapped] == [1, 1, 2, 2]
    with pytest.raises(ConfigError, match="max_words"):
        chunk_text(pages, max_words=0)
    with pytest.raises(ConfigError, match="overlap_sentences"):
        chunk_text(pages, overlap_sentences=-1)


# ------------------------------------------------------------------------------- pdf errors

def test_image_only_and_blank_pdf_is_a_clear_error(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    path = tmp_path / "scan.pdf"
    with PdfPages(path) as pdf:
        fig = plt.figure(figsize=(8.27, 11.69))
        ax = fig.add_axes([0, 0, 1, 1])
        ax.axis("off")
        ax.add_patch(plt.Circle((0.5, 0.5), 0.2))
        ax.add_patch(plt.Rectangle((0.1, 0.1), 0.3, 0.1))
        pdf.savefig(fig)
        plt.close(fig)
        fig = plt.figure(figsize=(8.27, 11.69))  # a blank page
        pdf.savefig(fig)
        plt.close(fig)
    message = f"^{re.escape(str(path))}: no extractable text on any of its 2 pages \\(scanned\\? run OCR first\\)$"
    with pytest.raises(WMTPError, match=message):
        extract_text(path)


def test_bad_files_name_themselves(tmp_path, rendered):
    notes = tmp_path / "notes.pdf"
    notes.write_text("just some text, not a PDF")
    with pytest.raises(WMTPError, match=rf"{notes}: not a PDF"):
        extract_text(notes)
    with pytest.raises(WMTPError, match=rf"{tmp_path / 'missing.pdf'}: PDF file not found"):
        extract_text(tmp_path / "missing.pdf")
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(rendered[1].read_bytes()[:300])
    with pytest.raises(WMTPError, match=rf"{cut}: unreadable PDF"):
        extract_text(cut)
    import pypdf

    locked = tmp_path / "locked.pdf"
    writer = pypdf.PdfWriter(clone_from=rendered[1])
    writer.encrypt("secret", algorithm="RC4-128")
    writer.write(locked)
    with pytest.raises(WMTPError, match=rf"{locked}: the PDF is encrypted"):
        extract_text(locked)


def test_render_rejects_bad_input(tmp_path):
    with pytest.raises(WMTPError, match="no paragraphs"):
        render_pdf([], tmp_path / "x.pdf")
    with pytest.raises(WMTPError, match="paragraph 1 must be a"):
        render_pdf([("a", "b"), "just text"], tmp_path / "x.pdf")
    with pytest.raises(ConfigError, match="per_page"):
        render_pdf([("a", "b")], tmp_path / "x.pdf", per_page=0)


# ------------------------------------------------------------------------------------ QA pairs

def test_qa_jsonl_round_trip_and_errors(tmp_path):
    pairs = [QAPair("Who directed The Grent?", "Dolan Mirs", "c3", ("dolan", "mirs")),
             QAPair("Where is Zanu?", "in the north", None, ())]
    path = write_qa_jsonl(tmp_path / "qa.jsonl", pairs)
    assert read_qa_jsonl(path) == pairs
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"question": "What does Brimhold make?", "answer": "The finest cheese"}\n\n')
    assert read_qa_jsonl(plain) == [QAPair("What does Brimhold make?", "The finest cheese", None, ("finest", "cheese"))]
    bad = tmp_path / "bad.jsonl"
    cases = ['{"question": "q", "answer": "a"}\n{"question": "q2", "answer": ',
             '{"question": "q", "answer": ""}',
             '{"question": "q", "answer": "a", "keywords": "a"}',
             '{"question": "q", "answer": "a", "chunk_id": 3}',
             '{"question": "q", "answer": "a", "gold": "a"}',
             '["q", "a"]']
    messages = [r"bad\.jsonl:2: invalid JSON", r"bad\.jsonl:1: field 'answer' must be a non-empty string",
                r"bad\.jsonl:1: field 'keywords' must be a list", r"bad\.jsonl:1: field 'chunk_id'",
                r"bad\.jsonl:1: unknown field\(s\) \['gold'\]", r"bad\.jsonl:1: expected a JSON object"]
    for text, message in zip(cases, messages):
        bad.write_text(text + "\n")
        with pytest.raises(DataError, match=message):
            read_qa_jsonl(bad)
    bad.write_text("\n")
    with pytest.raises(DataError, match="no QA pairs"):
        read_qa_jsonl(bad)


@pytest.fixture(scope="module")
def world():
    from weighted_mtp.world.world import build_world

    return build_world(0, people=30, films=8, books=8, cities=10, countries=4, companies=6,
                       n_train=3, n_valid=1, n_test=1)


def test_world_questions_cover_every_relation():
    from weighted_mtp.world.facts import RELATIONS

    assert set(WORLD_QUESTIONS) == set(RELATIONS)


def test_world_generator_through_a_pdf(world, tmp_path):
    facts = world.facts[:40]
    by_rel = {}
    for f in world.facts:
        by_rel.setdefault(f.relation, f)
    facts += [f for f in by_rel.values() if f not in facts]  # every relation at least once
    paragraphs = [(f"Notes {i}", " ".join(f.sentence for f in facts[i:i + 6]) + " This line is no fact.")
                  for i in range(0, len(facts), 6)]
    pages = extract_text(render_pdf(paragraphs, tmp_path / "world.pdf", per_page=4))
    chunks = chunk_text(pages, max_words=30)
    pairs = generate_qa(chunks, WorldQAGenerator(world))
    assert [(p.question, p.answer) for p in pairs] == [(WORLD_QUESTIONS[f.relation].format(s=f.subject), f.object)
                                                       for f in facts]
    for p in pairs:  # the chunk named is the one that states the fact
        chunk = next(c for c in chunks if c.cid == p.chunk_id)
        assert p.answer in chunk.text and p.keywords
    by_question = {p.question: p.answer for p in pairs}
    d = by_rel["director"]
    assert by_question[f"Who directed {d.subject}?"] == d.object
    c = by_rel["capital"]
    assert by_question[f"What is the capital of {c.subject}?"] == c.object
    # Overlapping chunks repeat sentences; each question is still asked once.
    overlapped = chunk_text(pages, max_words=30, overlap_sentences=2)
    assert sum(len(c.sentences) for c in overlapped) > sum(len(c.sentences) for c in chunks)
    again = generate_qa(overlapped, WorldQAGenerator(world))
    assert [(p.question, p.answer) for p in again] == [(p.question, p.answer) for p in pairs]
    assert [p.chunk_id for p in again] == [next(c.cid for c in overlapped if f.sentence in c.sentences) for f in facts]
    with pytest.raises(WMTPError, match="found no question in 1 chunks"):
        generate_qa([Chunk("c0", 1, "Nothing here.", ("Nothing here.",))], WorldQAGenerator(world))
    # A chunk made by hand (no sentence bookkeeping) is split again.
    hand = Chunk("x", 1, f"{d.sentence} {c.sentence}")
    got = WorldQAGenerator(world).generate([hand])
    assert [(p.answer, p.chunk_id) for p in got] == [(d.object, "x"), (c.object, "x")]


class FakeChat:
    def __init__(self, replies):
        self.replies, self.seen = replies, []

    def chat(self, messages_batch):
        self.seen.append(list(messages_batch))
        return self.replies[: len(messages_batch)]


def test_teacher_generator_parses_and_filters():
    chunks = [Chunk("c0", 1, "The Grent was directed by Dolan Mirs. It was released in 1999."),
              Chunk("c1", 2, "Vantor Shipping is headquartered in St. Louis.")]
    replies = ["Here you go:\n1. **Question:** Who directed The Grent?\n   **Answer:** Dolan Mirs.\n"
               "Question: When was The Grent released?\nAnswer: in the year 1999\n"  # not in the chunk: dropped
               "Q: Which year was it released? A: 1999\n"
               "Question: What genre is it?\nAnswer:\n"  # empty: dropped
               "Question: Who directed The Grent?\nAnswer: dolan mirs\n",  # repeated question: first kept
               "Question: Where is Vantor Shipping headquartered?\nAnswer: st. louis.\nQuestion: Who?\nAnswer: Zanu"]
    teacher = FakeChat(replies)
    pairs = generate_qa(chunks, TeacherQAGenerator(teacher, n_per_chunk=2))
    assert pairs == [QAPair("Who directed The Grent?", "Dolan Mirs", "c0", ("dolan", "mirs")),
                     QAPair("Which year was it released?", "1999", "c0", ("1999",)),
                     QAPair("Where is Vantor Shipping headquartered?", "st. louis", "c1", ("st", "louis"))]
    (batch,) = teacher.seen
    assert batch == [qa_messages(c, 2) for c in chunks]
    user = batch[0][1]["content"]
    assert chunks[0].text in user and "Question: <question>\nAnswer: <answer>" in user
    assert len(generate_qa(chunks, TeacherQAGenerator(FakeChat(replies), n_per_chunk=1))) == 2
    assert parse_qa_reply("no pairs at all") == []
    with pytest.raises(ConfigError, match="cannot chat"):
        TeacherQAGenerator(object())
    with pytest.raises(WMTPError, match="1 replies for 2 chunks"):
        TeacherQAGenerator(FakeChat(replies[:1])).generate(chunks)


# ------------------------------------------------------------------------- chat on the teachers

def test_openai_chat_keeps_the_whole_reply_and_sends_no_stop():
    from weighted_mtp.steper.teachers import OpenAITeacher

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            content = f"Question: {body['messages'][-1]['content']}? Yes. More.\nAnswer: second line"
            payload = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        teacher = OpenAITeacher(f"http://127.0.0.1:{httpd.server_address[1]}", "m", max_tokens=99, max_workers=3)
        batch = [[{"role": "user", "content": f"m{i}"}] for i in range(5)]
        assert teacher.chat(batch) == [f"Question: m{i}? Yes. More.\nAnswer: second line" for i in range(5)]
        assert sorted(json.dumps(b, sort_keys=True) for b in seen) == sorted(
            json.dumps({"model": "m", "messages": m, "temperature": 0, "max_tokens": 99}, sort_keys=True)
            for m in batch)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_hf_chat_has_no_stop_and_no_cut(monkeypatch):
    import weighted_mtp.steper.teachers as teachers
    from weighted_mtp.eval.generate import GenerationConfig
    from weighted_mtp.steper.teachers import HFTeacher, chat_prompt

    calls = []

    def fake_generate(model, tokenizer, prompts, cfg):
        calls.append((prompts, cfg))
        return [" First. Second.\nThird."] * len(prompts)

    monkeypatch.setattr(teachers, "generate", fake_generate)
    teacher = HFTeacher.__new__(HFTeacher)  # no model needed: generate is faked
    teacher.model, teacher.tokenizer = None, None
    teacher.generation = GenerationConfig(max_new_tokens=5, temperature=0.0, stop=("\n",), batch_size=2)
    messages = [[{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]]
    assert teacher.chat(messages) == [" First. Second.\nThird."]
    (prompts, cfg), = calls
    assert prompts == [chat_prompt(messages[0])] == ["S\n\nU"]
    assert (cfg.stop, cfg.max_new_tokens, cfg.batch_size) == ((), 5, 2)
    assert teacher.generation.stop == ("\n",)  # step() keeps its newline stop


# ------------------------------------------------------------------------------------ metrics

PAIRS = [QAPair("Who directed The Grent?", "Dolan Mirs", "c1", ("dolan", "mirs")),
         QAPair("Where is Vantor?", "Zanu", "c2", ("zanu",)),
         QAPair("When?", "2000", "c9", ("2000",))]
PREDICTIONS = ["Dolan Mirs", "the city of Zanu", "1999"]


def test_keyword_overlap_by_hand():
    assert keyword_overlap("Dolan Mirsky directed it", ["Dolan", "Mirs"]) == 0.5  # whole words only
    assert keyword_overlap("It was DOLAN MIRS.", ["dolan", "mirs"]) == 1.0
    assert keyword_overlap("in St. Louis", ["st louis"]) == 1.0
    assert keyword_overlap("nothing", ["a", "zanu"]) == 0.0  # "a" normalises to nothing and never counts
    with pytest.raises(ValueError):
        keyword_overlap("x", [])


def test_scenario_metrics_by_hand():
    m = scenario_metrics(PREDICTIONS, PAIRS, None, None)
    # EM 1,0,0; F1 1, 2*(1/3)*1/(4/3) = 0.5, 0; cover-EM 1,1,0; keywords 1,1,0.
    assert m == pytest.approx({"em": 1 / 3, "f1": 0.5, "cover_em": 2 / 3, "keyword_overlap": 2 / 3, "n": 3})
    retrieved = [["c1", "c2"], ["c3", "c2"], ["c0", "c4"]]
    r = scenario_metrics(PREDICTIONS, PAIRS, retrieved, ["c1", "c2", None])  # the third has no gold: not counted
    assert r["recall@1"] == pytest.approx(1 / 2) and r["recall@2"] == pytest.approx(1.0)
    r = scenario_metrics(PREDICTIONS, PAIRS, retrieved, None)  # gold = each pair's chunk_id
    assert r["recall@1"] == pytest.approx(1 / 3) and r["recall@2"] == pytest.approx(2 / 3)
    one = scenario_metrics(PREDICTIONS, PAIRS, [["c1"], ["c2"], ["c9"]], None)
    assert one["recall@1"] == 1.0 and not any(k.startswith("recall@") and k != "recall@1" for k in one)
    with pytest.raises(ValueError, match="same number"):
        scenario_metrics(PREDICTIONS, PAIRS, [["c1"], ["c2", "c3"], ["c9"]], None)
    with pytest.raises(ValueError, match="2 predictions for 3"):
        scenario_metrics(PREDICTIONS[:2], PAIRS, None, None)


def test_compression_metrics_by_hand():
    chunks = [Chunk("c0", 1, "The Grent was directed by Dolan Mirs."), "Zanu makes cheese."]
    # [dolan mirs directed it] vs [grent was directed by dolan mirs]: 3 common, P 3/4, R 1/2, F1 0.6.
    m = compression_metrics(["Dolan Mirs directed it", ""], chunks, raw_tokens=64, memory_tokens=8)
    assert m == pytest.approx({"reconstruction_f1": 0.3, "n": 2, "raw_tokens": 64, "memory_tokens": 8,
                               "compression_ratio": 8.0})
    assert set(compression_metrics(["x"], ["x"])) == {"reconstruction_f1", "n"}


def test_render_markdown_tables():
    scenarios = {"zero-shot": scenario_metrics(PREDICTIONS, PAIRS, None, None),
                 "rag (bm25, k=2)": scenario_metrics(PREDICTIONS, PAIRS, [["c1", "c2"], ["c3", "c2"], ["c0", "c4"]]),
                 "oracle chunk": scenario_metrics(["Dolan Mirs", "Zanu", "2000"], PAIRS, None, None)}
    summary = {"pdf": {"path": "docs/world.pdf", "pages": 3, "chunks": 12}, "model": "tiny-llama (CLaRa stage 3)",
               "scenarios": scenarios,
               "compression": compression_metrics(["Dolan Mirs directed it"], ["The Grent was directed by Dolan Mirs."],
                                                  raw_tokens=64, memory_tokens=8),
               "examples": [{"question": p.question, "answer": p.answer,
                             "predictions": {"zero-shot": pred, "oracle chunk": p.answer}}
                            for p, pred in zip(PAIRS, ["a | b", "c\nd", "1999"])]}
    md = render_markdown(summary)
    assert "# CLaRa evaluation: docs/world.pdf" in md
    assert "- pages: 3" in md and "- chunks: 12" in md and "- tiny-llama (CLaRa stage 3)" in md
    assert "| Scenario | EM | F1 | Cover-EM | Keyword overlap | Recall@1 | Recall@2 | n |" in md
    assert "| zero-shot | 33.3 | 50.0 | 66.7 | 66.7 | – | – | 3 |" in md
    assert "| rag (bm25, k=2) | 33.3 | 50.0 | 66.7 | 66.7 | 33.3 | 66.7 | 3 |" in md
    assert "| oracle chunk | 100.0 | 100.0 | 100.0 | 100.0 | – | – | 3 |" in md
    assert "| Reconstruction token F1 | 60.0 |" in md and "| Compression ratio | 8.0× |" in md
    assert "| question | answer | predictions.zero-shot | predictions.oracle chunk |" in md
    assert "| Who directed The Grent? | Dolan Mirs | a \\| b | Dolan Mirs |" in md
    assert "| Where is Vantor? | Zanu | c d | Zanu |" in md
    assert "## Run" not in md
    timed = render_markdown({**summary, "default_model": {"base": "smollm2", "cached": False, "build_seconds": 612.0},
                             "seconds": {"prepare": 0.4, "evaluate": 30.5}})
    assert ("## Run\n\n- default model: base: smollm2\n- default model: cached: False\n"
            "- default model: build_seconds: 612.0\n- seconds: prepare: 0.4\n- seconds: evaluate: 30.5\n") in timed
    six = render_markdown({**summary, "examples": summary["examples"] * 2, "compression": None})
    assert six.count("| Who directed The Grent?") == 2 and "Compression" not in six  # at most five examples
    with pytest.raises(ValueError, match="no 'scenarios'"):
        render_markdown({"pdf": {}, "model": "m"})


def test_eval_pdf_config_sources_and_local_teacher_spec(tmp_path, monkeypatch):
    """qa.source defaults to cloze; hf resolves a packaged model (embedded:smollm2) to its local
    directory before the teacher is built; sources missing their keys fail at load time."""
    import weighted_mtp.clara.eval_pdf as eval_pdf
    from weighted_mtp.clara.cloze import ClozeQAGenerator
    from weighted_mtp.clara.eval_pdf import _qa_generator, load_eval_pdf_config
    from conftest import REPO

    path = REPO / "configs" / "clara" / "eval_pdf.yaml"
    cfg = load_eval_pdf_config(path)
    assert cfg.qa.source == "cloze" and isinstance(_qa_generator(cfg), ClozeQAGenerator)
    built = []
    monkeypatch.setattr(eval_pdf, "resolve_model_path", lambda spec, cfg=None: tmp_path / spec.split(":")[1])
    monkeypatch.setattr(eval_pdf, "build_teacher", lambda kind, **options: built.append((kind, options)) or FakeChat([]))
    gen = _qa_generator(load_eval_pdf_config(path, ["qa.source=hf", "qa.teacher.model_path=embedded:smollm2"]))
    assert isinstance(gen, TeacherQAGenerator)
    assert built == [("hf", {"model_dir": str(tmp_path / "smollm2"), "max_new_tokens": 128})]
    for overrides, key in ((["qa.source=hf"], "qa.teacher.model_path"), (["qa.source=file"], "qa.file"),
                           (["qa.source=openai"], "qa.teacher.base_url"), (["max_questions=0"], "max_questions"),
                           (["base=gpt"], "base")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_eval_pdf_config(path, overrides)
