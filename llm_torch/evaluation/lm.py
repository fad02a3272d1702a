"""``LLMTorchLM``: llm-torch models inside lm-evaluation-harness.

It subclasses lm-eval's ``TemplateLM``, the base of lm-eval's own ``HFLM``: requests are split
into tokens by the same code, so an llm-torch checkpoint and its ``to_hf`` export score the same
items with the same tokens, and the numbers agree with ``HFLM``'s (the tests check 1e-4). The
scoring itself is :mod:`llm_torch.evaluation.scoring`, which the training callback shares.
"""

from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from llm_torch.architectures.base import DecoderLM
from llm_torch.engine.loading import DTYPES, load_model, resolve_device
from llm_torch.evaluation.scoring import (
    Request,
    rolling_windows,
    score_requests,
)
from llm_torch.generation import new_cache
from llm_torch.tokenizer import Tokenizer, get_tokenizer

#: Tokens ``generate_until`` adds when a request names no ``max_gen_toks`` (lm-eval's default).
DEFAULT_MAX_GEN_TOKS = 256


@register_model("llm-torch", "llm_torch")
class LLMTorchLM(TemplateLM):
    """An llm-torch model as an lm-evaluation-harness ``LM``.

    Build it from a checkpoint (``ckpt_path``), a Hugging Face folder (``hf_dir``) or a model in
    memory (``model`` plus ``tokenizer``). ``lm_eval --model llm-torch --model_args
    ckpt_path=...`` works too once this module is imported.

    Args:
        ckpt_path: A checkpoint written by ``llm-torch fit``.
        hf_dir: A ``save_pretrained`` folder (GPT-2 or Llama).
        tokenizer: A tokenizer spec (``gpt2``, ``hf:/path/tokenizer.json``...) or a tokenizer;
            by default the checkpoint's, or the ``tokenizer.json`` in ``hf_dir``.
        model: A GPT or Llama to evaluate as it is (instead of ``ckpt_path``/``hf_dir``).
        device: ``auto`` (CUDA if any), ``cpu``, ``cuda:1``...; ``None`` leaves the model where
            it is, in its dtype (``precision`` is then ignored).
        batch_size: Requests (or rolling windows) per forward pass.
        precision: ``32``, ``bf16`` or ``16``: the dtype the weights are cast to.

    Raises:
        ValueError: Bad arguments, or no tokenizer for the model.
    """

    def __init__(
        self,
        ckpt_path: str | None = None,
        hf_dir: str | None = None,
        tokenizer: str | Tokenizer | None = None,
        model: DecoderLM | None = None,
        device: str | None = "auto",
        batch_size: int | str = 16,
        precision: str = "32",
    ) -> None:
        super().__init__()
        if str(precision) not in DTYPES:
            raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}.")
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if model is None:
            model, chosen = load_model(ckpt_path, hf_dir, tokenizer)
        elif ckpt_path is not None or hf_dir is not None:
            raise ValueError("Pass a model, or ckpt_path / hf_dir to load one, not both.")
        elif tokenizer is None:
            raise ValueError("A model passed in memory needs its tokenizer.")
        else:
            chosen = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        if device is not None:
            model = model.to(device=resolve_device(device), dtype=DTYPES[str(precision)])
        self._device = next(model.parameters()).device
        self.model = model.eval()
        self.llm_tokenizer = chosen
        self.batch_size = int(batch_size)

    @property
    def eot_token_id(self) -> int:
        """End-of-text: the token every training document follows, hence the empty context."""
        return self.llm_tokenizer.eot_id

    @property
    def max_length(self) -> int:
        """The model's context, ``block_size`` tokens."""
        return self.model.config.block_size

    @property
    def tokenizer_name(self) -> str:
        """Name of the tokenizer, for lm-eval's request caches."""
        return self.llm_tokenizer.name

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **_: Any
    ) -> list[int]:
        """Encode as in training: plain text, no BOS or other special tokens added."""
        return self.llm_tokenizer.encode(string)

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], **kwargs: Any
    ) -> list[tuple[float, bool]]:
        """Score tokenized ``(strings, context_ids, continuation_ids)`` requests."""
        pairs: list[Request] = [(context, continuation) for _, context, continuation in requests]
        results = score_requests(self.model, pairs, self.batch_size)
        for (strings, _, _), result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", strings, result)
        return results

    def loglikelihood_rolling(
        self, requests: list[Instance], disable_tqdm: bool = False
    ) -> list[float]:
        """Log-likelihood of whole documents, each token scored once (for perplexity).

        A document starts after the end-of-text token; one longer than the context is scored in
        overlapping windows that give every token as much context as the model holds.
        """
        windows: list[Request] = []
        counts = []
        for request in requests:
            ids = self.tok_encode(request.args[0])
            document = rolling_windows(ids, self.prefix_token_id, self.max_length)
            windows += document
            counts.append(len(document))
        scores = score_requests(self.model, windows, self.batch_size)
        totals, start = [], 0
        for request, count in zip(requests, counts, strict=True):
            total = sum(logprob for logprob, _ in scores[start : start + count])
            start += count
            totals.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (request.args[0],), total)
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations through the KV cache, cut at the first stop string.

        ``until`` (stop strings) and ``max_gen_toks`` come from each request; generation also
        stops at the end-of-text token. The context keeps its last ``block_size - max_gen_toks``
        tokens, and ``max_gen_toks`` is capped at ``block_size - 1``.

        Raises:
            ValueError: A request asks for sampling (``do_sample``), which this model does not do.
        """
        outputs: list[str] = [""] * len(requests)
        jobs: dict[tuple[int, int], list[tuple[int, list[int], list[str]]]] = {}
        for index, request in enumerate(requests):
            context, kwargs = request.args
            kwargs = dict(kwargs or {})
            if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0) > 0:
                raise ValueError(
                    f"LLMTorchLM decodes greedily; the task asks for sampling ({kwargs}). Set "
                    "do_sample: false in the task's generation_kwargs."
                )
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            wanted = kwargs.get("max_gen_toks") or kwargs.get("max_new_tokens")
            wanted = DEFAULT_MAX_GEN_TOKS if wanted is None else wanted
            max_new = min(int(wanted), self.max_length - 1)
            ids = self.tok_encode(context)[-(self.max_length - max_new) :] or [self.eot_token_id]
            jobs.setdefault((len(ids), max_new), []).append((index, ids, until))
        progress = tqdm(total=len(requests), disable=disable_tqdm, desc="generate_until")
        for (_, max_new), group in sorted(jobs.items(), reverse=True):
            for start in range(0, len(group), self.batch_size):
                batch = group[start : start + self.batch_size]
                new = self._greedy([ids for _, ids, _ in batch], max_new, [u for *_, u in batch])
                for (index, _, until), tokens in zip(batch, new, strict=True):
                    outputs[index] = _cut(self.llm_tokenizer.decode(tokens), until)
                    self.cache_hook.add_partial(
                        "generate_until", requests[index].args, outputs[index]
                    )
                progress.update(len(batch))
        progress.close()
        return outputs

    @torch.no_grad()
    def _greedy(
        self, prompts: list[list[int]], max_new: int, until: list[list[str]]
    ) -> list[list[int]]:
        """Greedy tokens after equal-length ``prompts``, until end-of-text or a stop string.

        Each row's text is checked after every step, so decoding stops as soon as every row
        holds a stop string (or end-of-text, which is not kept).
        """
        ids = torch.tensor(prompts, device=self._device)
        new: list[list[int]] = [[] for _ in prompts]
        done = [False] * len(prompts)
        cache = new_cache(self.model, len(prompts), ids.size(1) + max_new)
        logits = self.model(ids, cache=cache)
        for step in range(max_new):
            next_ids = logits[:, -1].float().argmax(dim=-1)
            for row, token in enumerate(next_ids.tolist()):
                if done[row]:
                    continue
                if token == self.eot_token_id:
                    done[row] = True
                    continue
                new[row].append(token)
                text = self.llm_tokenizer.decode(new[row])
                done[row] = any(stop and stop in text for stop in until[row])
            if all(done) or step == max_new - 1:
                break
            logits = self.model(next_ids[:, None], cache=cache.seek(ids.size(1) + step))
        return new


def _cut(text: str, until: list[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text
