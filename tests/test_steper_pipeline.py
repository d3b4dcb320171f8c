"""The StepER data path: the stop rule and the interleaved loop, the step datasets, the teacher
filter, resumable generation, the student's prompt, and recall per step."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from weighted_mtp.rag.passages import Passage
from weighted_mtp.rag.retrievers import BM25Retriever
from weighted_mtp.steper.generate import TRAJECTORIES_FILE, generate_split, is_kept, read_trajectories
from weighted_mtp.steper.inference import score_trajectory
from weighted_mtp.world.prompts import extract_answer, first_sentence, is_final
from weighted_mtp.steper.step_data import step_records
from weighted_mtp.steper.trajectory import Trajectory, TrajectoryStep, run_interleaved


@dataclass
class Q:
    qid: str
    question: str
    answers: tuple[str, ...]
    supporting_pids: tuple[str, ...] = ()


CORPUS = [Passage(f"p{i}", text.split()[0], text) for i, text in enumerate([
    "Velmo was directed by Ana Kors.",
    "Ana Kors was born in Dusk.",
    "Dusk is located in Varn.",
    "Ana Kors is a painter.",
    "Velmo was released in 1990.",
    "Brisa was directed by Tod Lum.",
    "Tod Lum was born in Eko.",
    "Eko is located in Mirr.",
    "Varn has many rivers.",
    "Mirr has many lakes.",
])]


class Scripted:
    """A reasoner that replays fixed sentences per question and records what it was shown."""

    def __init__(self, script: dict[str, list[str]]):
        self.script, self.seen = script, []

    def step(self, queries):
        self.seen.extend(queries)
        return [self.script[q.qid][len(q.reasoning)] for q in queries]


def test_first_sentence_and_answer_rules():
    assert first_sentence("  Velmo was directed by Ana Kors. Ana Kors was born in Dusk.") == "Velmo was directed by Ana Kors."
    assert first_sentence("So the answer is: St. Louis.\nQuestion: next") == "So the answer is: St. Louis."
    assert first_sentence("no end in sight") == "no end in sight"
    assert first_sentence("3.5 is a number. Next.") == "3.5 is a number."
    assert extract_answer("So the answer is: St. Louis.") == "St. Louis"
    assert extract_answer("So the answer is: 3.5") == "3.5"
    assert extract_answer("Velmo was directed by Ana Kors.") == ""
    assert is_final("So the answer is: Varn.") and not is_final("Dusk is located in Varn.")


def test_loop_queries_stop_rule_and_k_new_passages_each_step():
    retriever = BM25Retriever.build(CORPUS)
    script = {
        "a": ["Velmo was directed by Ana Kors.", "Ana Kors was born in Dusk.", "Dusk is located in Varn.",
              "So the answer is: Varn.", "never reached"],
        "b": ["Brisa was directed by Tod Lum.", "still going.", "and going.", "on.", "more.", "past the limit."],
        "c": ["", "never reached"],
    }
    reasoner = Scripted(script)
    questions = [Q("a", "Who is the country of the birthplace of the director of Velmo?", ("Varn",)),
                 Q("b", "What is the country of the birthplace of the director of Brisa?", ("Mirr",)),
                 Q("c", "Anything?", ("x",))]
    a, b, c = run_interleaved(questions, retriever, reasoner, k=2, max_steps=5)
    assert [st.sentence for st in a.steps] == script["a"][:4] and a.finished and a.prediction == "Varn"
    assert len(b.steps) == 5 and not b.finished and b.prediction == ""  # cut by the step limit
    assert len(c.steps) == 1 and not c.finished  # an empty sentence ends the loop
    assert a.steps[0].query == questions[0].question
    assert [st.query for st in a.steps[1:]] == script["a"][:3]  # then the last sentence
    retrieved = [pid for st in a.steps for pid in st.retrieved]
    assert all(len(st.retrieved) == 2 for st in a.steps) and len(set(retrieved)) == len(retrieved)
    assert "p0" in a.steps[0].retrieved  # the rare title word finds the first hop
    shown = [q for q in reasoner.seen if q.qid == "a"]
    assert [len(q.passages) for q in shown] == [2, 4, 6, 8]  # P_<=s accumulates
    assert [q.reasoning for q in shown][2] == tuple(script["a"][:2])


def _trajectory() -> Trajectory:
    return Trajectory("q1", "Where?", ("Varn",), [
        TrajectoryStep("Where?", ("p0", "p4"), "Velmo was directed by Ana Kors."),
        TrajectoryStep("Velmo was directed by Ana Kors.", ("p1", "p3"), "Ana Kors was born in Dusk."),
        TrajectoryStep("Ana Kors was born in Dusk.", ("p2", "p8"), "So the answer is: Varn."),
    ])


def test_step_records_cut_one_trajectory_into_first_mid_and_final_rows():
    by_id = {p.pid: p for p in CORPUS}
    init, exp, agg = step_records(_trajectory(), by_id.__getitem__)
    assert [r.step_task for r in (init, exp, agg)] == ["init", "exp", "agg"]
    assert init.input == "Velmo was directed by Ana Kors.\nVelmo was released in 1990."  # P_1 only
    assert init.output == "Velmo was directed by Ana Kors."
    assert exp.input.count("\n") == 3 and "Ana Kors is a painter." in exp.input and "Dusk is" not in exp.input
    assert exp.output == "Velmo was directed by Ana Kors. Ana Kors was born in Dusk."
    assert agg.output.endswith("Ana Kors was born in Dusk. So the answer is: Varn.") and agg.input.count("\n") == 5
    assert "Question: Where?" in agg.instruction and {r.problem_id for r in (init, exp, agg)} == {"q1"}


def test_recall_per_step_by_hand():
    row = score_trajectory(_trajectory(), ["p1", "p2"], max_steps=5)
    assert [row[f"recall_step{s}"] for s in range(1, 6)] == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert row["em"] == 1.0 and row["f1"] == 1.0 and row["acc"] == 1.0


@pytest.fixture(scope="module")
def small_world():
    from weighted_mtp.world.world import build_world

    return build_world(seed=3, n_train=60, n_valid=10, n_test=10)


def test_teacher_filter_keeps_only_correct_final_answers(small_world, tmp_path):
    from weighted_mtp.world.teacher import WorldTeacher

    retriever = BM25Retriever.build(small_world.corpus)
    questions = small_world.questions["train"]
    stats = generate_split(questions, retriever, WorldTeacher(small_world, error_rate=0.3), tmp_path, k=4,
                           show_progress=False)
    trajectories = read_trajectories(tmp_path / TRAJECTORIES_FILE)
    wrong = [t for t in trajectories if t.prediction != next(q.answer for q in questions if q.qid == t.qid)]
    assert wrong, "error_rate 0.3 should make some trajectories end wrong"
    assert stats.kept == len(trajectories) - len(wrong) and not any(is_kept(t) for t in wrong)
    kept_qids = {json.loads(line)["problem_id"] for line in (tmp_path / "steper.jsonl").read_text().splitlines()}
    assert kept_qids == {t.qid for t in trajectories if is_kept(t)}
    assert not kept_qids & {t.qid for t in wrong}
    final_rows = (tmp_path / "final_step.jsonl").read_text().splitlines()
    assert len(final_rows) == stats.kept and all("So the answer is:" in json.loads(r)["output"] for r in final_rows)


class Crash(Exception):
    pass


class CrashingTeacher:
    """Fails on its n-th call, like a teacher endpoint going away mid-run."""

    def __init__(self, inner, fail_on_call: int):
        self.inner, self.calls, self.fail_on_call = inner, 0, fail_on_call

    def step(self, queries):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise Crash()
        return self.inner.step(queries)


def test_interrupted_generation_resumes_and_writes_each_question_once(small_world, tmp_path):
    from weighted_mtp.world.teacher import WorldTeacher

    retriever = BM25Retriever.build(small_world.corpus)
    questions = small_world.questions["train"]
    teacher = WorldTeacher(small_world, error_rate=0.1)
    reference = tmp_path / "reference"
    generate_split(questions, retriever, teacher, reference, chunk_size=16, show_progress=False)

    out = tmp_path / "resumed"
    with pytest.raises(Crash):  # dies during the third chunk
        generate_split(questions, retriever, CrashingTeacher(teacher, fail_on_call=12), out, chunk_size=16,
                       show_progress=False)
    partial = read_trajectories(out / TRAJECTORIES_FILE)
    assert 0 < len(partial) < len(questions) and len(partial) % 16 == 0
    with open(out / TRAJECTORIES_FILE, "a") as f:  # and a crash mid-line on top
        f.write('{"qid": "train-0')
    counting = CrashingTeacher(teacher, fail_on_call=-1)
    generate_split(questions, retriever, counting, out, chunk_size=16, show_progress=False)
    lines = (out / TRAJECTORIES_FILE).read_text().splitlines()
    qids = [json.loads(line)["qid"] for line in lines]
    assert len(qids) == len(set(qids)) == len(questions)
    assert sorted(qids) == sorted(q.qid for q in questions)
    for name in ("first_step.jsonl", "mid_step.jsonl", "final_step.jsonl", "steper.jsonl"):
        assert (out / name).read_text() == (reference / name).read_text()
    assert counting.calls < 5 * -(-(len(questions)) // 16)  # finished questions were not asked again


def test_student_prompt_tokenizes_like_training(small_world, wmtp_cache):
    """The student continues its own earlier sentences: the prompt text must encode to exactly
    the tokens training saw (prompt and response tokenized separately)."""
    from weighted_mtp.data.collate import format_prompt
    from weighted_mtp.data.records import Record
    from weighted_mtp.models.micro import train_tokenizer
    from weighted_mtp.steper.inference import student_prompt
    from weighted_mtp.world.prompts import StepQuery, context, instruction
    from weighted_mtp.world.world import world_texts

    tok = train_tokenizer(list(world_texts(small_world)), vocab_size=1024)
    q = small_world.questions["train"][0]
    passages = tuple(small_world.corpus[:6])
    sentences = tuple(f.sentence for f in q.chain[:2])
    prompt = student_prompt(StepQuery(q.qid, q.question, passages, sentences))
    record = Record(instruction(q.question), context(passages), "", "t", True, "p", 0)
    separate = (tok(format_prompt(record), add_special_tokens=False)["input_ids"]
                + tok(" ".join(sentences), add_special_tokens=False)["input_ids"])
    assert tok(prompt, add_special_tokens=False)["input_ids"] == separate


def test_generate_config_is_strict(tmp_path):
    from weighted_mtp.errors import ConfigError
    from weighted_mtp.steper.config import load_generate_config

    cfg = load_generate_config("configs/steper/generate.yaml")
    assert cfg.retriever.k == 4 and cfg.max_steps == 5 and cfg.teacher.kind == "world"
    with pytest.raises(ConfigError, match="unknown config key 'retriever.kk'.*did you mean 'retriever.k'"):
        load_generate_config("configs/steper/generate.yaml", ["retriever.kk=3"])
    with pytest.raises(ConfigError, match="'teacher.kind' is 'world'"):
        load_generate_config("configs/steper/generate.yaml", ["source.kind=hotpotqa", "source.train=x.json",
                                                              "source.valid=y.json"])
    with pytest.raises(ConfigError, match="teacher.model_path"):
        load_generate_config("configs/steper/generate.yaml", ["teacher.kind=hf"])
