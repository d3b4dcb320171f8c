import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from weighted_mtp.data.collate import (
    ALPACA_PROMPT, ALPACA_PROMPT_WITH_INPUT, IGNORE_INDEX, PairwiseCollator, SFTCollator,
    format_prompt, special_prefix, tokenize_example,
)
from weighted_mtp.data.records import Record
from weighted_mtp.errors import ConfigError

CORPUS = ["def add(a, b):\n    return a + b\n", "Below is an instruction that describes a task.",
          "### Instruction:\nWrite a function.\n\n### Response:\n", "print(sum(map(int, input().split())))"]


def build_tokenizer(*, bos: bool, pad: bool = True) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>" if pad else None)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(bos=True)


@pytest.fixture(scope="module")
def tok_plain():
    return build_tokenizer(bos=False, pad=False)


def rec(instruction="Write a function.", output="def add(a, b):\n    return a + b\n", inp="", correct=True):
    return Record(instruction=instruction, input=inp, output=output, task_id="p_correct_0",
                  is_correct=correct, problem_id="p", difficulty=1)


def test_prompt_templates_exact():
    assert format_prompt(rec(instruction="Do X")) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nDo X\n\n### Response:\n")
    assert format_prompt(rec(instruction="Do {X}", inp="data")) == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nDo {X}\n\n"
        "### Input:\ndata\n\n### Response:\n")
    assert ALPACA_PROMPT.count("{") == 1 and ALPACA_PROMPT_WITH_INPUT.count("{") == 2


def test_special_prefix_probe(tok, tok_plain):
    assert special_prefix(tok) == [tok.bos_token_id]
    assert special_prefix(tok_plain) == []


@pytest.mark.parametrize("which", ["tok", "tok_plain"])
def test_tokenize_example_boundary_and_eos(which, request):
    t = request.getfixturevalue(which)
    r = rec()
    ex = tokenize_example(t, r, max_length=512)
    prompt_ids = t(format_prompt(r), add_special_tokens=False)["input_ids"]
    response_ids = t(r.output, add_special_tokens=False)["input_ids"]
    prefix = [t.bos_token_id] if which == "tok" else []
    assert ex.input_ids == prefix + prompt_ids + response_ids + [t.eos_token_id]
    n_head = len(prefix) + len(prompt_ids)
    assert ex.labels[:n_head] == [IGNORE_INDEX] * n_head
    assert ex.labels[n_head:] == response_ids + [t.eos_token_id]
    assert not ex.truncated
    assert t.decode(ex.input_ids[n_head:-1]) == r.output


def test_truncation_cuts_response_end(tok):
    r = rec(output="print(sum(map(int, input().split())))\n" * 20)
    full = tokenize_example(tok, r, max_length=4096)
    ex = tokenize_example(tok, r, max_length=len(full.input_ids) - 5)
    assert ex.truncated and ex.input_ids == full.input_ids[:-5] and ex.labels == full.labels[:-5]


def test_truncation_of_overlong_prompt_keeps_prompt_tail_and_one_target(tok):
    r = rec(instruction="Write a function. " * 50)
    full = tokenize_example(tok, r, max_length=4096)
    n_head = full.labels.count(IGNORE_INDEX)
    ex = tokenize_example(tok, r, max_length=16)
    assert ex.truncated and len(ex.input_ids) == 16
    assert ex.input_ids[0] == tok.bos_token_id  # BOS kept
    assert ex.input_ids[1:15] == full.input_ids[n_head - 14:n_head]  # end of prompt kept
    assert ex.labels == [IGNORE_INDEX] * 15 + [full.input_ids[n_head]]
    with pytest.raises(ConfigError):
        tokenize_example(tok, r, max_length=2)


def test_sft_collator(tok):
    records = [rec(output="x = 1\n"), rec(output="def add(a, b):\n    return a + b\n" * 3, correct=False),
               rec(instruction="Hi", inp="1 2", output="print(3)")]
    examples = [tokenize_example(tok, r, 512) for r in records]
    batch = SFTCollator(tok, max_length=512)(records)
    longest = max(len(e.input_ids) for e in examples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, longest)
    assert batch["input_ids"].dtype == torch.long and batch["n_truncated"] == 0
    assert batch["is_correct"].tolist() == [True, False, True] and batch["is_correct"].dtype == torch.bool
    for i, ex in enumerate(examples):
        n = len(ex.input_ids)
        assert batch["input_ids"][i, :n].tolist() == ex.input_ids
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (longest - n)
        assert batch["input_ids"][i, n:].eq(tok.pad_token_id).all()
        labels = batch["labels"][i]
        assert labels[n:].eq(IGNORE_INDEX).all()
        assert labels[n - 1].item() == tok.eos_token_id  # last real label is EOS
        n_prompt = len(tok(format_prompt(records[i]))["input_ids"])
        assert labels[:n_prompt].eq(IGNORE_INDEX).all() and labels[n_prompt] != IGNORE_INDEX


def test_sft_collator_dynamic_padding_and_multiple(tok):
    records = [rec(output="x = 1\n"), rec(output="y = 2\n")]
    plain = SFTCollator(tok, max_length=1024)(records)
    longest = max(len(tokenize_example(tok, r, 1024).input_ids) for r in records)
    assert plain["input_ids"].shape[1] == longest < 1024
    rounded = SFTCollator(tok, max_length=1024, pad_to_multiple_of=64)(records)
    assert rounded["input_ids"].shape[1] == 64 * -(-longest // 64)
    capped = SFTCollator(tok, max_length=longest + 1, pad_to_multiple_of=64)(records)
    assert capped["input_ids"].shape[1] == longest + 1


def test_sft_collator_truncation_counted(tok):
    records = [rec(output="x = 1\n"), rec(output="print(1)\n" * 40), rec(output="print(2)\n" * 40)]
    short = len(tokenize_example(tok, records[0], 4096).input_ids)
    batch = SFTCollator(tok, max_length=short + 3)(records)
    assert batch["n_truncated"] == 2 and batch["input_ids"].shape[1] == short + 3
    assert batch["attention_mask"].sum(1).tolist() == [short, short + 3, short + 3]


def test_pad_defaults_to_eos(tok_plain):
    batch = SFTCollator(tok_plain, max_length=256)([rec(output="x"), rec(output="x = 1\n" * 5)])
    n = int(batch["attention_mask"][0].sum())
    assert batch["input_ids"][0, n:].eq(tok_plain.eos_token_id).all()
    assert batch["labels"][0, n:].eq(IGNORE_INDEX).all()


def test_pairwise_collator(tok):
    pairs = [(rec(output="def f():\n    return 1\n"), rec(output="def f(): pass", correct=False)),
             (rec(output="x"), rec(output="y = [i for i in range(10)]\n" * 4, correct=False))]
    batch = PairwiseCollator(tok, max_length=512)(pairs)
    lengths = [len(tokenize_example(tok, r, 512).input_ids) for pair in pairs for r in pair]
    for side in ("pos", "neg"):
        assert batch[f"{side}_input_ids"].shape == (2, max(lengths))
        assert batch[f"{side}_labels"].shape == batch[f"{side}_attention_mask"].shape == (2, max(lengths))
    for i, (pos, neg) in enumerate(pairs):
        for side, r in (("pos", pos), ("neg", neg)):
            ex = tokenize_example(tok, r, 512)
            n = len(ex.input_ids)
            assert batch[f"{side}_input_ids"][i, :n].tolist() == ex.input_ids
            assert batch[f"{side}_labels"][i, :n].tolist() == ex.labels
            assert batch[f"{side}_labels"][i, n:].eq(IGNORE_INDEX).all()
            assert batch[f"{side}_attention_mask"][i].sum().item() == n
    assert batch["n_truncated"] == 0
