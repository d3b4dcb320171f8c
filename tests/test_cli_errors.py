"""Bad input ends as exit status 2 and one line on stderr that names the file and line or the key."""

import json

import pytest

from conftest import REPO
from weighted_mtp.cli import main

BASELINE = str(REPO / "configs" / "baseline" / "baseline.yaml")
GOOD = {"instruction": "Write f.", "input": "", "output": "def f():\n    return 1\n", "task_id": "p1_correct_0",
        "is_correct": True, "problem_id": "p1", "difficulty": 1}


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _train(capsys, data, *extra):
    code = main(["train", BASELINE, "--output-dir", str(data.parent / "run"),
                 "--override", f"dataset.train={data}", "--override", f"dataset.validation={data}",
                 "--override", "mlflow.enabled=false", *extra])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("bad_line, expected", [
    ('{"instruction": "x", ', "invalid JSON"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "output"}), "output"),
    (json.dumps({**GOOD, "is_correct": "yes"}), "is_correct"),
])
def test_malformed_data_line_names_file_and_line(tmp_path, capsys, bad_line, expected):
    data = _write(tmp_path / "train.jsonl", [GOOD, GOOD, bad_line, GOOD])
    code, err = _train(capsys, data)
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "train.jsonl:3" in err and expected in err


def test_unknown_config_key_names_key(tmp_path, capsys):
    data = _write(tmp_path / "train.jsonl", [GOOD])
    code, err = _train(capsys, data, "--override", "training.bach_size=2")
    assert code == 2 and len(err.splitlines()) == 1
    assert "training.bach_size" in err and "training.batch_size" in err


def test_empty_split_after_sampling_names_file(tmp_path, capsys):
    data = _write(tmp_path / "train.jsonl", [{**GOOD, "is_correct": False, "task_id": "p1_incorrect_0"}])
    code, err = _train(capsys, data)
    assert code == 2 and len(err.splitlines()) == 1
    assert "train.jsonl" in err and "empty" in err


def test_missing_data_file_names_key(tmp_path, capsys):
    code = main(["train", BASELINE, "--override", f"dataset.train={tmp_path / 'nope.jsonl'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "dataset.train" in err and "nope.jsonl" in err


def test_dry_run_validates_without_training(tmp_path, capsys):
    assert main(["train", BASELINE, "--dry-run"]) == 0
    assert "config OK" in capsys.readouterr().out
