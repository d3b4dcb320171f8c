"""The cached reference-CE column: strict parsing, exact placement at response targets, the
precompute job (equal to scoring the batch live) and `wmtp data ref-ce`."""

import json

import pytest
import torch

from conftest import REPO
from weighted_mtp.cli import main
from weighted_mtp.models import ref_ce as ref_ce_mod
from weighted_mtp.data.collate import SFTCollator, format_prompt, special_prefix
from weighted_mtp.data.records import Record, iter_records, parse_record
from weighted_mtp.models.ref_ce import write_reference_ce
from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.models.load import load_tokenizer
from weighted_mtp.models.reference import ReferenceModel

BASELINE = str(REPO / "configs" / "baseline" / "baseline.yaml")
GOOD = {"instruction": "Add.", "input": "", "output": "print(1)", "task_id": "p1_correct_0",
        "is_correct": True, "problem_id": "p1", "difficulty": 3}


@pytest.fixture(scope="module")
def tok(micro_model_dir):
    return load_tokenizer(micro_model_dir)


@pytest.fixture(scope="module")
def reference(micro_model_dir):
    return ReferenceModel.load(micro_model_dir)


def rows(n=6):
    out = []
    for i in range(n):
        out.append({"instruction": f"Write a function f{i} that adds {i}." + " Carefully." * (i % 3),
                    "input": "x = 3" if i == 2 else "", "output": f"def f{i}(x):\n    return x + {i}\n" * (1 + i % 4),
                    "task_id": f"p{i}_{'incorrect' if i == 3 else 'correct'}_0", "is_correct": i != 3,
                    "problem_id": f"p{i}", "difficulty": 1, "source": "test"})
    return out


def write_jsonl(path, objs):
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs))
    return path


@pytest.mark.parametrize("bad, what", [
    ('"1.0, 2.0"', "must be a list of numbers, got str"),
    ("[1.0, NaN]", "'ref_ce'[1] must be finite"),
    ("[1.0, Infinity]", "'ref_ce'[1] must be finite"),
    ('[0.5, "x"]', "'ref_ce'[1] must be a number, got str"),
    ("[true]", "'ref_ce'[0] must be a number, got bool"),
])
def test_bad_ref_ce_names_file_and_line(tmp_path, bad, what):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, json.dumps(GOOD)[:-1] + f', "ref_ce": {bad}}}'])
    with pytest.raises(DataError) as err:
        list(iter_records(path))
    assert str(err.value).startswith(f"{path}:2: ") and what in str(err.value)


def test_ref_ce_parsed_and_null_is_absent():
    assert parse_record({**GOOD, "ref_ce": [1, 2.5]}, "f", 1).ref_ce == (1.0, 2.5)
    assert parse_record({**GOOD, "ref_ce": None}, "f", 1) == parse_record(GOOD, "f", 1) == Record(**GOOD)


def _rec(prompt_words, output, ref_ce, task_id="t"):
    return Record(instruction="Do it." + " now" * prompt_words, input="", output=output, task_id=task_id,
                  is_correct=True, problem_id=task_id, difficulty=1, ref_ce=ref_ce)


def test_collator_places_values_at_response_positions(tok):
    outputs = ["print(1)\n", "def g():\n    return 2\n"]
    recs = [_rec(0, outputs[0], None, "a"), _rec(7, outputs[1], None, "b")]
    prefix = len(special_prefix(tok))
    n_prompt = [prefix + len(tok(format_prompt(r), add_special_tokens=False)["input_ids"]) for r in recs]
    n_resp = [len(tok(o, add_special_tokens=False)["input_ids"]) + 1 for o in outputs]  # + EOS
    assert n_prompt[0] != n_prompt[1]
    values = [[10.0 * i + k + 1 for k in range(n)] for i, n in enumerate(n_resp)]
    # row 0 carries two extra values (a column computed without truncation): only the prefix is used
    recs = [_rec(0, outputs[0], tuple(values[0]) + (99.0, 98.0), "a"), _rec(7, outputs[1], tuple(values[1]), "b")]
    batch = SFTCollator(tok, max_length=256)(recs)
    want = torch.zeros(batch["labels"].shape)
    for i in range(2):
        want[i, n_prompt[i]:n_prompt[i] + n_resp[i]] = torch.tensor(values[i])
    assert batch["ref_ce"].dtype == torch.float32
    assert torch.equal(batch["ref_ce"], want)
    assert torch.equal(batch["ref_ce"] != 0, batch["labels"] != -100)


def test_collator_rejects_short_or_missing_column(tok):
    good = _rec(0, "print(1)\n", tuple([1.0] * 50), "ok_0")
    with pytest.raises(DataError, match=r"task_id 'short_0'.*has 2 values but the row has \d+ response target.*"
                                        r"max_length=256.*wmtp data ref-ce"):
        SFTCollator(tok, max_length=256)([good, _rec(3, "print(1)\n", (1.0, 2.0), "short_0")])
    with pytest.raises(DataError, match="task_id 'none_0' has none"):
        SFTCollator(tok, max_length=256)([good, _rec(3, "print(1)\n", None, "none_0")])
    assert "ref_ce" not in SFTCollator(tok, max_length=256)([_rec(0, "x", None)])


def test_write_reference_ce_equals_live_scoring(tmp_path, tok, reference, monkeypatch):
    src = write_jsonl(tmp_path / "in.jsonl", rows()[:3] + [""] + rows()[3:])  # a blank line is kept out
    monkeypatch.setattr(ref_ce_mod, "WINDOW_BATCHES", 1)  # several windows and batches, sorted by length
    out = tmp_path / "out.jsonl"
    stats = write_reference_ce(src, out, reference, tok, max_length=72, batch_size=2, correct_only=True)
    assert stats["rows"] == 6 and stats["scored"] == 5 and stats["skipped"] == 1 and stats["truncated"] >= 1
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [{k: v for k, v in o.items() if k != "ref_ce"} for o in written] == rows()
    assert "ref_ce" not in written[3] and all("ref_ce" in o for i, o in enumerate(written) if i != 3)
    records = [r for r in iter_records(out) if r.is_correct]
    batch = SFTCollator(tok, max_length=72)(records)
    live = reference.token_ce(batch["input_ids"], batch["attention_mask"], batch["labels"])
    torch.testing.assert_close(batch["ref_ce"], live, rtol=0, atol=1e-4)
    assert abs(stats["mean_ce"] - live[batch["labels"] != -100].mean().item()) < 1e-3
    with pytest.raises(ConfigError, match="overwrite the input"):
        write_reference_ce(out, out, reference, tok, max_length=72)


def test_cli_ref_ce(tmp_path, capsys, micro_model_dir):
    src = write_jsonl(tmp_path / "in.jsonl", rows(3))
    out = tmp_path / "with_ref.jsonl"
    common = ["--override", f"dataset.train={src}", "--override", "models.policy.path=embedded:micro-llama", "--override", "dataset.max_length=64", "--batch-size", "2"]
    assert main(["data", "ref-ce", BASELINE, "--output", str(out), "--reference", str(micro_model_dir), *common]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "models.reference.path=null" in printed and "dataset.train=" in printed
    assert all(len(json.loads(line)["ref_ce"]) > 0 for line in out.read_text().splitlines())
    before = src.read_text()
    assert main(["data", "ref-ce", BASELINE, "--output", str(src), "--reference", str(micro_model_dir), *common]) == 2
    assert "overwrite the input" in capsys.readouterr().err and src.read_text() == before
    assert main(["data", "ref-ce", BASELINE, "--output", str(tmp_path / "x.jsonl"), *common]) == 2
    assert "models.reference.path" in capsys.readouterr().err


def test_to_json_dict_round_trips_and_omits_absent_column():
    rec = parse_record(GOOD, "f", 1)
    assert rec.to_json_dict() == GOOD
    with_col = Record(**GOOD, ref_ce=(0.5, 1.25))
    assert parse_record(json.loads(json.dumps(with_col.to_json_dict())), "f", 1) == with_col
