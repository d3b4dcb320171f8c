"""`wmtp data prepare` and `wmtp data index` from the command line, on upstream-schema fixtures."""

import json

from weighted_mtp.cli import main
from weighted_mtp.data.jsonl_index import JsonlIndex


def test_prepare_humaneval_then_index(tmp_path, capsys):
    upstream = tmp_path / "HumanEval.jsonl"
    upstream.write_text(json.dumps({"task_id": "HumanEval/0", "prompt": "def f(x):\n", "canonical_solution": "    return x\n",
                                    "test": "def check(c):\n    assert c(1) == 1\n", "entry_point": "f"}) + "\n")
    out = tmp_path / "he.jsonl"
    assert main(["data", "prepare", "--source", "humaneval", str(upstream), str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["instruction"] == "def f(x):\n" and row["output"] == "    return x\n" and row["is_correct"] is True
    assert main(["data", "index", str(out)]) == 0
    assert "1 rows" in capsys.readouterr().out
    assert len(JsonlIndex.load_or_build(out)) == 1


def test_prepare_bad_upstream_line_exits_2(tmp_path, capsys):
    upstream = tmp_path / "mbpp.jsonl"
    upstream.write_text('{"task_id": 1, "text": "x"}\nnot json\n')
    assert main(["data", "prepare", "--source", "mbpp", str(upstream), str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "mbpp.jsonl:1" in err or "mbpp.jsonl:2" in err
