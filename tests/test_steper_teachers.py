"""steper.teachers: the OpenAI-compatible teacher against a real local HTTP server, the HF teacher
on a tiny random Llama, prompts and the factory."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from weighted_mtp.errors import ConfigError, WMTPError
from weighted_mtp.rag.passages import Passage
from weighted_mtp.world.prompts import StepQuery, first_sentence
from weighted_mtp.steper.teachers import (SYSTEM_PROMPT, HFTeacher, OpenAITeacher, Teacher, build_teacher,
                                          chat_completions_url, teacher_messages, teacher_prompt)

P1 = Passage("d1", "Scott Derrickson", "Scott Derrickson (born July 16, 1966) is an American director.")
P2 = Passage("d2", "Ed Wood", "Edward Davis Wood Jr. was an American filmmaker.")
QUERIES = [
    StepQuery("q1", "Were Scott Derrickson and Ed Wood of the same nationality?", (P1,), ()),
    StepQuery("q2", "Were Scott Derrickson and Ed Wood of the same nationality?", (P1, P2),
              ("Scott Derrickson is American.",)),
    StepQuery("q3", "Who directed Ed Wood?", (P2,), ("Ed Wood is a film.", "It was made in 1994.")),
]


class ChatServer:
    """A local /v1/chat/completions server. Replies name the question and run on for two more
    sentences and a second line; `script` holds (status, body) answers served before that."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple[int, str]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    scripted = outer.script.pop(0) if outer.script else None
                if self.path != "/v1/chat/completions":
                    status, text = 404, '{"error": "not found"}'
                elif scripted:
                    status, text = scripted
                else:
                    question = body["messages"][1]["content"].split("Question: ")[1].split("\n")[0]
                    content = f"It asks: {question} Then more. Even more.\nA second line."
                    status, text = 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = ChatServer()
    yield s
    s.close()


def test_messages_and_plain_prompt():
    system, user = teacher_messages(QUERIES[2])
    assert system == {"role": "system", "content": SYSTEM_PROMPT} and "So the answer is: <answer>." in SYSTEM_PROMPT
    assert user["role"] == "user"
    assert user["content"] == ("Passages:\nEd Wood: Edward Davis Wood Jr. was an American filmmaker.\n\n"
                               "Question: Who directed Ed Wood?\n\n"
                               "Reasoning so far: Ed Wood is a film. It was made in 1994.\n\nNext sentence:")
    assert "Reasoning so far: (none yet)" in teacher_messages(QUERIES[0])[1]["content"]
    assert teacher_prompt(QUERIES[2]) == SYSTEM_PROMPT + "\n\n" + user["content"]


def test_chat_url_rule():
    for base in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"):
        assert chat_completions_url(base) == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("https://x.org/openai/v1") == "https://x.org/openai/v1/chat/completions"


def test_openai_teacher_request_and_first_sentence(server):
    teacher = OpenAITeacher(server.base + "/v1/", "teacher-70b", api_key="k", max_tokens=32, max_workers=1)
    assert isinstance(teacher, Teacher)
    (out,) = teacher.step(QUERIES[1:2])
    assert out == f"It asks: {QUERIES[1].question}"  # "?" ends the first sentence; the rest is dropped
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k"
    assert req["body"] == {"model": "teacher-70b", "messages": teacher_messages(QUERIES[1]), "temperature": 0,
                           "max_tokens": 32, "stop": ["\n"]}


def test_openai_teacher_concurrent_keeps_order(server):
    queries = [StepQuery(f"q{i}", f"Question number {i}?", (P1,), ()) for i in range(9)]
    out = OpenAITeacher(server.base, "m", max_workers=4).step(queries)
    assert out == [f"It asks: Question number {i}?" for i in range(9)]
    assert len(server.requests) == 9 and all(r["auth"] is None for r in server.requests)


def test_final_answer_line_is_kept_whole(server):
    reply = {"choices": [{"message": {"content": "So the answer is: St. Louis.\nextra"}}]}
    server.script = [(200, json.dumps(reply))]
    assert OpenAITeacher(server.base, "m").step(QUERIES[:1]) == ["So the answer is: St. Louis."]


def test_transient_errors_are_retried(server):
    server.script = [(500, "overloaded"), (429, "slow down")]
    out = OpenAITeacher(server.base, "m", retries=3, backoff_s=0.001).step(QUERIES[:1])
    assert out == [f"It asks: {QUERIES[0].question}"]
    assert len(server.requests) == 3


def test_retries_run_out(server):
    server.script = [(503, "down")] * 3
    with pytest.raises(WMTPError, match=r"chat/completions: HTTP 503 .*down"):
        OpenAITeacher(server.base, "m", retries=2, backoff_s=0.001).step(QUERIES[:1])
    assert len(server.requests) == 3


def test_404_fails_at_once_naming_the_url(server):
    with pytest.raises(WMTPError, match=rf"POST {server.base}/wrong/v1/chat/completions: HTTP 404"):
        OpenAITeacher(server.base + "/wrong", "m", backoff_s=0.001).step(QUERIES[:1])
    assert len(server.requests) == 1


def test_bad_replies(server):
    teacher = OpenAITeacher(server.base, "m")
    server.script = [(200, "<html>oops</html>")]
    with pytest.raises(WMTPError, match="reply is not JSON"):
        teacher.step(QUERIES[:1])
    server.script = [(200, '{"choices": []}')]
    with pytest.raises(WMTPError, match=r"no choices\[0\]\.message\.content"):
        teacher.step(QUERIES[:1])
    server.script = [(400, '{"error": "bad model"}')]
    with pytest.raises(WMTPError, match="HTTP 400 .*bad model"):
        teacher.step(QUERIES[:1])


def test_unreachable_server(server):
    base = server.base
    server.close()
    with pytest.raises(WMTPError, match="cannot reach the server"):
        OpenAITeacher(base, "m", retries=1, backoff_s=0.001).step(QUERIES[:1])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from weighted_mtp.models.micro import train_tokenizer

    texts = [teacher_prompt(q) for q in QUERIES] + ["So the answer is: yes. The film was made in 1994.\n"] * 5
    tokenizer = train_tokenizer(texts, vocab_size=300)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_teacher")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_hf_teacher_batched_equals_one_by_one(tiny_dir):
    batched = HFTeacher(tiny_dir, max_new_tokens=16, batch_size=8).step(QUERIES)
    single = HFTeacher(tiny_dir, max_new_tokens=16, batch_size=1)
    assert len(batched) == len(QUERIES)
    assert all(isinstance(s, str) and s == first_sentence(s) and "\n" not in s for s in batched)
    assert any(batched)  # the random model does write something
    assert batched == [single.step([q])[0] for q in QUERIES]


def test_hf_teacher_cuts_to_the_first_sentence(tiny_dir, monkeypatch):
    import weighted_mtp.steper.teachers as teachers

    seen = {}

    def fake_generate(model, tokenizer, prompts, cfg):
        seen.update(prompts=prompts, cfg=cfg)
        return [" He is American. He lives in LA.", "So the answer is: St. Louis.", "no end"]

    monkeypatch.setattr(teachers, "generate", fake_generate)
    teacher = HFTeacher(tiny_dir, max_new_tokens=7, batch_size=2)
    assert teacher.step(QUERIES) == ["He is American.", "So the answer is: St. Louis.", "no end"]
    assert seen["prompts"] == [teacher_prompt(q) for q in QUERIES]  # no chat template: plain text
    cfg = seen["cfg"]
    assert (cfg.max_new_tokens, cfg.batch_size, cfg.temperature, tuple(cfg.stop)) == (7, 2, 0.0, ("\n",))


def test_chat_template_prompt_drops_a_second_bos(tiny_dir):
    from weighted_mtp.models.load import load_tokenizer

    tok = load_tokenizer(tiny_dir)
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    system, user = teacher_messages(QUERIES[0])
    assert teacher_prompt(QUERIES[0], tok) == f"<|system|>{system['content']}\n<|user|>{user['content']}\n<|assistant|>"


def test_build_teacher(server, tiny_dir):
    teacher = build_teacher("openai", base_url=server.base, model="m", max_workers=2)
    assert isinstance(teacher, OpenAITeacher) and teacher.max_workers == 2
    assert isinstance(build_teacher("hf", model_dir=tiny_dir, batch_size=2), HFTeacher)
    with pytest.raises(ConfigError, match="known: hf, openai, world"):
        build_teacher("gpt")
    with pytest.raises(ConfigError, match="teacher 'openai'.*temperature"):
        build_teacher("openai", base_url=server.base, model="m", temperature=0.7)
    with pytest.raises(ConfigError, match="teacher 'hf'.*model_dir"):
        build_teacher("hf")
    with pytest.raises(ConfigError, match="no config.json"):
        build_teacher("hf", model_dir=tiny_dir / "missing")


def test_build_world_teacher_needs_a_world():
    pytest.importorskip("weighted_mtp.world.teacher")
    with pytest.raises(ConfigError, match="world"):
        build_teacher("world")
