"""The chat prompt format (eval.prompts, wired through eval.tasks and eval.run): the tokenizer's
template with an EvalPlus-style instruction, the code taken from the first fenced block with the
prompt's signature kept, and `auto` picking chat for instruct models not trained here. A tiny
random Llama with a ChatML template stands in for SmolLM2."""

from __future__ import annotations

import json
import shutil

import pytest

from weighted_mtp.cli import main
from weighted_mtp.errors import ConfigError
from weighted_mtp.eval.prompts import (
    CHAT_INSTRUCTION,
    CHAT_RESPONSE_PREFIX,
    chat_prompt,
    chat_solution,
    complete_prefix,
    first_fenced_block,
    sanitize,
)
from weighted_mtp.eval.run import EvalSettings, evaluate_checkpoint, resolve_checkpoint, resolve_prompt_format
from weighted_mtp.eval.sandbox import SandboxLimits, run_programs
from weighted_mtp.eval.tasks import build_program, build_prompt, load_benchmark

CHATML = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\n"
          "Be helpful.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory, micro_model_dir):
    """A 2-block random Llama whose tokenizer (the micro one) carries a ChatML template."""
    from tiny_runs import tiny_lm_dir

    from weighted_mtp.models.load import load_tokenizer

    out = tmp_path_factory.mktemp("chat") / "tiny-chat"
    shutil.copytree(tiny_lm_dir(tmp_path_factory.mktemp("tiny"), micro_model_dir), out)
    tok = load_tokenizer(out)
    tok.chat_template = CHATML
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def chat_tok(chat_model_dir):
    from weighted_mtp.models.load import load_tokenizer

    return load_tokenizer(chat_model_dir)


def test_chat_prompt_is_the_template_with_an_open_code_fence(chat_tok):
    task = load_benchmark("humaneval", limit=1).tasks[0]
    prompt = build_prompt(task, "chat", chat_tok)
    assert prompt == ("<|im_start|>system\nBe helpful.<|im_end|>\n<|im_start|>user\n"
                      f"{CHAT_INSTRUCTION}\n```\n{task.code_prompt.strip()}\n```\n<|im_end|>\n"
                      f"<|im_start|>assistant\n{CHAT_RESPONSE_PREFIX}\n```python\n")
    # The micro tokenizer puts BOS before every prompt; a template writing BOS itself loses its copy.
    chat_tok.chat_template = "{{ bos_token }}" + CHATML
    try:
        assert build_prompt(task, "chat", chat_tok) == prompt
    finally:
        chat_tok.chat_template = CHATML
    with pytest.raises(ConfigError, match="needs the model's tokenizer"):
        build_prompt(task, "chat")


def test_chat_prompt_falls_back_when_the_template_rewrites_the_assistant_turn(chat_tok):
    chat_tok.chat_template = CHATML.replace("{{ m['content'] }}", "{{ m['content'] if m['role'] == 'user' else '' }}")
    try:
        prompt = chat_prompt("def f():", chat_tok)
    finally:
        chat_tok.chat_template = CHATML
    assert prompt.endswith(f"<|im_start|>assistant\n{CHAT_RESPONSE_PREFIX}\n```python\n")


def test_a_tokenizer_without_template_is_refused(micro_model_dir):
    from weighted_mtp.models.load import load_tokenizer

    with pytest.raises(ConfigError, match="no chat template; use --prompt-format raw"):
        chat_prompt("def f():", load_tokenizer(micro_model_dir))


def test_first_fenced_block():
    assert first_fenced_block("def f():\n    return 1\n```\nThis function returns 1.\n```python\nx\n```") == \
        "def f():\n    return 1\n"
    assert first_fenced_block("```python\ndef f():\n    pass\n```\nprose") == "def f():\n    pass\n"  # re-opened
    assert first_fenced_block("def f():\n    return 2") == "def f():\n    return 2"  # cut at max tokens
    assert first_fenced_block("") == ""


def test_sanitize_keeps_definitions_and_drops_examples():
    code = ("import math\nfrom typing import List\n\nLIMIT: int = 3\n\n@staticmethod\ndef f(x):\n"
            "    print('inside')\n    return x\n\nclass A:\n    pass\n\nprint(f(2))\nassert f(1) == 2\n"
            "if __name__ == '__main__':\n    input()\nfor i in range(3):\n    f(i)\n")
    assert sanitize(code) == ("import math\n\nfrom typing import List\n\nLIMIT: int = 3\n\n@staticmethod\n"
                              "def f(x):\n    print('inside')\n    return x\n\nclass A:\n    pass\n")
    assert sanitize("def f(:\n") == "def f(:\n"  # does not parse: left to fail in the sandbox


def test_a_definition_cut_off_by_the_budget_is_dropped():
    done = "import os\n\ndef f(x):\n    return [x,\n        x]\n\n"
    cut = done + "def g(y):\n    return y +"  # the token budget ran out inside g
    assert complete_prefix(cut) == done and sanitize(cut) == "import os\n\ndef f(x):\n    return [x,\n        x]\n"
    assert complete_prefix(done) == done
    broken_first = "def f(x):\n    return x +\n\ndef g():\n    pass\n"  # no complete prefix: unchanged
    assert complete_prefix(broken_first) == broken_first


def test_chat_solution_keeps_the_prompt_signature():
    prompt = 'from typing import List\n\n\ndef g(xs: List[int]) -> int:\n    """Sum."""\n'
    whole = "def g(xs):\n    return sum(xs)\n```\nExplanation."
    assert chat_solution(prompt, "g", whole) == prompt.rstrip("\n") + "\n\n\ndef g(xs):\n    return sum(xs)\n"
    body = "    return sum(xs)\n```"
    assert chat_solution(prompt, "g", body) == prompt + "    return sum(xs)\n"
    assert chat_solution("", "g", whole) == "def g(xs):\n    return sum(xs)\n"
    program = "n = int(input())\nprint(n * 2)\n"
    assert chat_solution("", "", program + "```", program=True) == program  # stdin programs: nothing dropped


def test_chat_programs_pass_and_fail_in_the_sandbox():
    """HumanEval/0 (whose prompt holds the import the solution needs) and /38 (whose prompt defines
    a helper it calls) answered the way a chat model answers: the whole function from its def
    line, an example call, the closing fence, prose; or only the body."""
    bench = load_benchmark("humaneval", limit=39)
    tasks = [bench.tasks[0], bench.tasks[38]]

    good = [f"def {t.entry_point}" + t.code_prompt.split(f"def {t.entry_point}", 1)[1] + t.canonical_solution
            + "\nprint('example')\n```\nThis code works." for t in tasks]
    bad = [f"def {t.entry_point}(*args):\n    return None\n```" for t in tasks]
    body_only = [tasks[0].canonical_solution + "```\nDone."]
    programs = [build_program(t, c, "chat") for t, c in zip(tasks + tasks + tasks[:1], good + bad + body_only)]
    assert all("```" not in p and "This code works" not in p for p in programs)
    results = run_programs(programs, SandboxLimits(cpu_s=5, wall_s=15), workers=2)
    assert [r.status for r in results] == ["passed", "passed", "failed", "failed", "passed"], results


def test_auto_picks_chat_for_instruct_models_not_trained_here(chat_model_dir, chat_tok, micro_model_dir, tmp_path):
    from weighted_mtp.models.load import load_tokenizer

    assert resolve_prompt_format("auto", chat_model_dir, chat_tok)[0] == "chat"
    assert resolve_prompt_format("auto", micro_model_dir, load_tokenizer(micro_model_dir))[0] == "raw"
    run = tmp_path / "run"  # trained here: the training template wins over the chat template
    shutil.copytree(chat_model_dir, run / "final")
    (run / "config.yaml").write_text("experiment: {name: fake}\n")
    (run / "metrics.jsonl").write_text("")
    assert resolve_prompt_format("auto", run / "final", chat_tok)[0] == "alpaca"


def test_chat_eval_end_to_end_with_generation_stats(chat_model_dir, tmp_path):
    settings = EvalSettings(benchmark="humaneval", limit=2, n=1, ks=[1], temperature=0.0, max_new_tokens=6,
                            batch_size=2)
    summary = evaluate_checkpoint(chat_model_dir, settings, tmp_path / "eval")
    assert summary["prompt_format"] == "chat" and "chat template" in summary["prompt_format_reason"]
    assert summary["subset"] and summary["n_tasks"] == 2
    # Every row ran to its 6-token budget or stopped earlier; the count is of produced tokens.
    assert 2 <= summary["generated_tokens"] <= 12 and summary["forward_passes"] <= 6
    assert summary["generation_seconds"] <= summary["seconds"]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "humaneval" / "seed0" / "samples.jsonl").open()]
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"] and all(not r["passed"] for r in rows)


def test_eval_accepts_model_names(micro_model_dir, chat_model_dir, monkeypatch, tmp_path, capsys):
    assert resolve_checkpoint("embedded:micro-llama") == (micro_model_dir, "embedded:micro-llama")
    # embedded:smollm2 resolves through the cached import, as in configs (faked: no 538 MB import).
    monkeypatch.setattr("weighted_mtp.models.load.ensure_smollm2", lambda *a, **k: chat_model_dir)
    assert resolve_checkpoint("embedded:smollm2") == (chat_model_dir, "embedded:smollm2")
    out = tmp_path / "out"
    assert main(["eval", "embedded:smollm2", "--benchmark", "humaneval", "--limit", "1", "--n", "1", "--k", "1",
                 "--temperature", "0", "--max-new-tokens", "4", "--output-dir", str(out)]) == 0
    summary = json.loads((out / "humaneval" / "summary.json").read_text())
    assert summary["model"] == "embedded:smollm2" and summary["prompt_format"] == "chat"
    assert "tokens/s" in capsys.readouterr().out
    assert main(["eval", "embedded:smollm3"]) == 2
    assert "unknown model name 'embedded:smollm3'; known: embedded:smollm2" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
