"""A config that names an architecture gets that architecture's defaults, however it is given.

jsonargparse fills a subclass's ``init_args`` with its signature defaults and keeps them when
``class_path`` switches to another class; Llama used to inherit GPT-2's context (1024) and tied
head that way. Every field of every registered architecture is checked against ``Config()``.
"""

from dataclasses import asdict, fields
from pathlib import Path

import pytest
from cli_helpers import REPO, tiny_args, write_corpus

from llm_torch.architectures import DecoderConfig, GPTConfig, LlamaConfig
from llm_torch.architectures.registry import ARCHITECTURES
from llm_torch.cli import cli

#: The byte tokenizer's vocabulary, which the data module links into the model.
VOCAB = 257


def _class_path(config_class: type[DecoderConfig]) -> str:
    return f"{config_class.__module__}.{config_class.__name__}"


def _built(tmp_path: Path, *args: str) -> DecoderConfig:
    """The architecture config that ``fit`` would train with these arguments (nothing runs)."""
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=60)
    run = cli([*tiny_args(tmp_path, corpus), "--data.tokenizer=byte", *args], run=False)
    config: DecoderConfig = run.model.config
    return config


def _yaml(tmp_path: Path, config_class: type[DecoderConfig], class_path_first: bool) -> Path:
    entries = [f"    class_path: {_class_path(config_class)}", "    init_args:"]
    entries.append(f"      vocab_size: {VOCAB}")
    if not class_path_first:
        entries = entries[1:] + entries[:1]
    path = tmp_path / "arch.yaml"
    path.write_text("model:\n  arch:\n" + "\n".join(entries) + "\n", encoding="utf-8")
    return path


ORDERS = [pytest.param(True, id="class_path-first"), pytest.param(False, id="init_args-first")]


@pytest.mark.parametrize("class_path_first", ORDERS)
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_a_yaml_naming_only_the_class_builds_its_defaults(
    tmp_path: Path, arch: str, class_path_first: bool
) -> None:
    config_class = ARCHITECTURES[arch][0]
    config = _built(tmp_path, f"--config={_yaml(tmp_path, config_class, class_path_first)}")
    assert type(config) is config_class
    assert asdict(config) == asdict(config_class(vocab_size=VOCAB))


@pytest.mark.parametrize("class_path_first", ORDERS)
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_flags_naming_only_the_class_build_its_defaults(
    tmp_path: Path, arch: str, class_path_first: bool
) -> None:
    config_class = ARCHITECTURES[arch][0]
    flags = [
        f"--model.arch.class_path={_class_path(config_class)}",
        f"--model.arch.init_args.vocab_size={VOCAB}",
    ]
    config = _built(tmp_path, *(flags if class_path_first else flags[::-1]))
    assert type(config) is config_class
    assert asdict(config) == asdict(config_class(vocab_size=VOCAB))


def test_the_architecture_defaults_differ_where_the_test_needs_them_to() -> None:
    # The tests above can only fail if some field's default differs between architectures.
    gpt, llama = asdict(GPTConfig()), asdict(LlamaConfig())
    assert (gpt["block_size"], gpt["tie_embeddings"]) == (1024, True)
    assert (llama["block_size"], llama["tie_embeddings"]) == (2048, False)


def test_no_class_path_means_gpt(tmp_path: Path) -> None:
    config = _built(tmp_path, "--model.arch.init_args.n_layer=3")
    assert asdict(config) == asdict(GPTConfig(vocab_size=VOCAB, n_layer=3))


def test_switching_a_gpt_yaml_to_llama_keeps_only_what_it_set(tmp_path: Path) -> None:
    # quickstart: a GPT with n_layer 4, block_size 64, rotary positions (GPT-only), ...
    config = _built(
        tmp_path,
        f"--config={REPO / 'configs' / 'shakespeare-char.yaml'}",
        f"--model.arch.class_path={_class_path(LlamaConfig)}",
    )
    assert type(config) is LlamaConfig
    # Set by the YAML: jsonargparse keeps them across the switch.
    assert (config.n_layer, config.block_size) == (4, 64)
    assert config.tie_embeddings is False  # not set by the YAML: Llama's own default


def test_a_subclass_that_redeclares_a_shared_field_is_refused() -> None:
    with pytest.raises(TypeError, match=r"redeclares \['block_size'\].*arch_defaults"):

        class Wide(GPTConfig):
            block_size: int = 4096

    assert "block_size" in {field.name for field in fields(GPTConfig)}
