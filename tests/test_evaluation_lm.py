"""``LLMTorchLM`` against lm-evaluation-harness's own ``HFLM`` on the ``to_hf`` export."""

from pathlib import Path

import pytest
import torch
from evaluation_helpers import export, save_checkpoint, tiny_model, tiny_tokenizer

pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from llm_torch.evaluation import LLMTorchLM, rolling_windows

CONTEXTS = [
    "The king speaks to the queen",
    "A man is standing in a kitchen. He",
    "Thou art my lord, and ",  # trailing space: moves to the continuation
    "",  # empty: scored after the end-of-text token
]
CONTINUATIONS = [" and the lord", " cracks two eggs.", "I'll say it's done", "Sweet night"]


def _requests(kind: str, args: list[tuple[object, ...]]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=arg, idx=i) for i, arg in enumerate(args)]


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_loglikelihood_and_rolling_equal_hflm_on_the_export(
    arch: str, tiny_bpe: Path, tmp_path: Path, one_thread: None
) -> None:
    tokenizer = tiny_tokenizer(tiny_bpe)
    model = tiny_model(arch, tokenizer.vocab_size, block_size=32)
    folder = export(model, tokenizer, tmp_path / "hf")
    ours = LLMTorchLM(hf_dir=str(folder), device="cpu", batch_size=3)
    theirs = HFLM(pretrained=str(folder), device="cpu", batch_size=3)

    pairs = [(c, x) for c in CONTEXTS for x in CONTINUATIONS]
    # Make a few continuations the model's greedy choice, so is_greedy is True somewhere
    # (among ordinary tokens: llm-torch encodes special-token text as plain text, by design).
    ordinary = len(tokenizer.mergeable_ranks)
    for context in CONTEXTS[:2]:
        ids = tokenizer.encode(context)
        greedy = int(model(torch.tensor([ids]))[0, -1, :ordinary].argmax())
        pairs.append((context, tokenizer.decode([greedy])))
    got = ours.loglikelihood(_requests("loglikelihood", pairs))
    want = theirs.loglikelihood(_requests("loglikelihood", pairs))
    assert [flag for _, flag in got] == [flag for _, flag in want]
    assert any(flag for _, flag in got)
    assert [score for score, _ in got] == pytest.approx([score for score, _ in want], abs=1e-4)

    # Documents longer than the context: 3x block_size, scored in overlapping windows.
    words = "the king queen lord lady sword crown night day love death fair foul sweet".split()
    long_text = " ".join(words[i % len(words)] for i in range(200))
    assert len(tokenizer.encode(long_text)) > 3 * model.config.block_size
    docs = [(long_text,), ("Short one.",)]
    got_rolling = ours.loglikelihood_rolling(_requests("loglikelihood_rolling", docs))
    want_rolling = theirs.loglikelihood_rolling(_requests("loglikelihood_rolling", docs))
    assert got_rolling == pytest.approx(want_rolling, abs=1e-4)


def test_results_come_back_in_request_order_whatever_the_batch_size(
    tiny_bpe: Path, tmp_path: Path, one_thread: None
) -> None:
    tokenizer = tiny_tokenizer(tiny_bpe)
    model = tiny_model("gpt", tokenizer.vocab_size)
    ckpt = save_checkpoint(model, tokenizer.spec, tmp_path / "tiny.ckpt")
    pairs = [(c, x) for c in CONTEXTS[:3] for x in CONTINUATIONS]
    from lm_eval.api.registry import get_model

    one = LLMTorchLM(ckpt_path=str(ckpt), device="cpu", batch_size=1)
    # As lm-eval builds it from `--model llm-torch --model_args ...`: every value a string.
    many = get_model("llm-torch").create_from_arg_string(
        f"ckpt_path={ckpt},device=cpu,batch_size=5"
    )
    assert isinstance(many, LLMTorchLM) and many.batch_size == 5
    singles = [one.loglikelihood(_requests("loglikelihood", [pair]))[0] for pair in pairs]
    batched = many.loglikelihood(_requests("loglikelihood", pairs))
    assert [s for s, _ in batched] == pytest.approx([s for s, _ in singles], abs=1e-5)
    # By hand: the continuation's log-probabilities under one forward pass of the model.
    context, continuation = pairs[1]
    ids = tokenizer.encode(context + continuation)
    n = len(tokenizer.encode(context))
    logprobs = torch.log_softmax(model(torch.tensor([ids[:-1]]))[0], dim=-1)
    by_hand = sum(float(logprobs[i - 1, ids[i]]) for i in range(n, len(ids)))
    assert batched[1][0] == pytest.approx(by_hand, abs=1e-4)


@pytest.mark.parametrize("length", [1, 5, 8, 9, 16, 17, 30])
def test_rolling_windows_score_each_token_once_as_lm_eval_does(length: int) -> None:
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    tokens = list(range(100, 100 + length))
    want = [
        make_disjoint_window(pair)
        for pair in get_rolling_token_windows(tokens, prefix_token=7, max_seq_len=8, context_len=1)
    ]
    got = rolling_windows(tokens, prefix=7, max_len=8)
    assert got == [(list(a), list(b)) for a, b in want]
    assert [t for _, continuation in got for t in continuation] == tokens
    assert all(len(context + continuation) <= 9 for context, continuation in got)


def test_generate_until_equals_greedy_llm_torch_generate_up_to_the_stop_string(
    tiny_bpe: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    one_thread: None,
) -> None:
    from llm_torch.generate_command import generate_command
    from llm_torch.tokenizer.base import EOT_TEXT

    tokenizer = tiny_tokenizer(tiny_bpe)
    model = tiny_model("llama", tokenizer.vocab_size, block_size=48)
    ckpt = save_checkpoint(model, tokenizer.spec, tmp_path / "tiny.ckpt")
    prompts = ["The king speaks", "A woman puts on her running shoes. She", "Thou"]
    generated = []
    for prompt in prompts:
        args = [f"--ckpt_path={ckpt}", f"--prompt={prompt}", "--temperature=0"]
        generate_command([*args, "--max_new_tokens=12", "--device=cpu"])
        printed = capsys.readouterr().out
        assert printed.startswith(prompt)
        generated.append(printed[len(prompt) :].removesuffix("\n").split(EOT_TEXT)[0])
    assert all(generated)
    # A stop string from inside each output, and one that never appears.
    stops = [text[len(text) // 2 : len(text) // 2 + 2] for text in generated]
    lm = LLMTorchLM(ckpt_path=str(ckpt), device="cpu", batch_size=2)
    requests = [
        (p, {"until": [s], "max_gen_toks": 12}) for p, s in zip(prompts, stops, strict=True)
    ]
    requests += [(p, {"until": ["@@@"], "max_gen_toks": 12}) for p in prompts]
    got = lm.generate_until(_requests("generate_until", requests))
    want = [text.split(stop)[0] for text, stop in zip(generated, stops, strict=True)] + generated
    # generate holds back a trailing incomplete UTF-8 character (it waits for the rest).
    assert [text.removesuffix("\ufffd") for text in got] == want
    assert all(len(cut) < len(text) for cut, text in zip(got, generated, strict=False))
