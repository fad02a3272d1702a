"""The speedrun-recipe options: QK-norm, ReLU^2, soft-capping, rotary GPT, untied GPT, Muon.

Each architecture option is checked for shape, causality and KV-cache decoding, against a hand
computation or ``transformers`` (QK-norm: Qwen 3 is Llama with per-head query/key RMSNorm), and
for a clear refusal on Hugging Face export. Muon is checked for its parameter split, its
per-role settings, and a Lightning step against a hand-written Muon + AdamW loop.
"""

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import REPO, scalars, tiny_args, write_corpus
from lightning.pytorch import Trainer
from lightning.pytorch.plugins import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from llm_torch.architectures import GPT, GPTConfig, Llama, LlamaConfig
from llm_torch.architectures.base import DecoderLM
from llm_torch.cli import cli
from llm_torch.components.mlp import MLP
from llm_torch.engine.module import CausalLMModule
from llm_torch.engine.optim import (
    GroupConfig,
    Muon,
    MuonConfig,
    OptimizerChain,
    OptimizerConfig,
    build_optimizer,
    newton_schulz,
    warmup_cosine,
)
from llm_torch.generation import new_cache
from llm_torch.interop.hf import to_hf
from llm_torch.interop.llama import LLAMA

SHAPE = {"vocab_size": 50, "block_size": 16, "n_layer": 2, "n_head": 4, "n_embd": 32}
GPT_OPTIONS: dict[str, dict[str, Any]] = {
    "qk_norm": {"qk_norm": True},
    "relu2": {"mlp_activation": "relu2"},
    "softcap": {"logit_softcap": 3.0},
    "rope": {"positions": "rope"},
    "untied": {"tie_embeddings": False},
}
LLAMA_OPTIONS: dict[str, dict[str, Any]] = {
    "qk_norm": {"qk_norm": True},
    "relu2": {"mlp_activation": "relu2"},
    "softcap": {"logit_softcap": 3.0},
}
CASES = [("gpt", name, opts) for name, opts in GPT_OPTIONS.items()] + [
    ("llama", name, opts) for name, opts in LLAMA_OPTIONS.items()
]
IDS = [f"{arch}-{name}" for arch, name, _ in CASES]


def _model(arch: str, **options: Any) -> DecoderLM:
    torch.manual_seed(0)
    if arch == "gpt":
        return GPT(GPTConfig(**SHAPE, **options)).eval()
    return Llama(LlamaConfig(**SHAPE, n_kv_head=2, **options)).eval()


def _randomise_norms(model: nn.Module) -> None:
    """Norm gains start at one, which would hide a gain applied to the wrong tensor."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm | nn.RMSNorm) and module.weight is not None:
                module.weight.uniform_(0.5, 1.5)


@pytest.mark.parametrize(("arch", "name", "options"), CASES, ids=IDS)
def test_option_is_causal_with_full_shape(arch: str, name: str, options: dict[str, Any]) -> None:
    model = _model(arch, **options)
    idx = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 7] = (idx[:, 7] + 1) % 50
    with torch.no_grad():
        logits, after = model(idx), model(changed)
    assert logits.shape == (2, 12, 50)
    torch.testing.assert_close(after[:, :7], logits[:, :7], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, 7:], logits[:, 7:])


@pytest.mark.parametrize(("arch", "name", "options"), CASES, ids=IDS)
def test_option_decodes_with_the_kv_cache_like_a_full_forward(
    arch: str, name: str, options: dict[str, Any]
) -> None:
    model = _model(arch, **options)
    idx = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(idx)
        cache = new_cache(model, batch_size=2)
        steps = [model(idx[:, :5], cache=cache)]
        steps += [model(idx[:, t : t + 1], cache=cache.seek(t)) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_rotary_gpt_has_no_position_table() -> None:
    model = _model("gpt", positions="rope")
    assert model.rope is not None and not any("wpe" in name for name in model.state_dict())
    learned = _model("gpt")
    assert learned.num_params() - model.num_params() == SHAPE["block_size"] * SHAPE["n_embd"]


def test_untied_gpt_has_its_own_head() -> None:
    model = _model("gpt", tie_embeddings=False)
    assert model.lm_head.weight is not model.wte.weight
    assert model.num_params() - _model("gpt").num_params() == SHAPE["vocab_size"] * SHAPE["n_embd"]


def test_relu_squared_mlp_by_hand() -> None:
    torch.manual_seed(0)
    mlp = MLP(8, 24, bias=True, activation="relu2")
    x = torch.randn(3, 8)
    hidden = x @ mlp.fc.weight.T + mlp.fc.bias
    expected = (torch.clamp(hidden, min=0) ** 2) @ mlp.proj.weight.T + mlp.proj.bias
    torch.testing.assert_close(mlp(x), expected)


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_softcap_squashes_logits_and_the_loss_uses_them(arch: str) -> None:
    capped = _model(arch, logit_softcap=3.0)
    plain = _model(arch)
    plain.load_state_dict(capped.state_dict())
    idx = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(3))
    targets = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = plain(idx)
        expected = 3.0 * torch.tanh(logits / 3.0)
        torch.testing.assert_close(capped(idx), expected)
        assert capped(idx).abs().max() < 3.0
        loss = F.cross_entropy(expected.flatten(0, 1), targets.flatten())
        torch.testing.assert_close(capped(idx, targets=targets), loss)


def test_qk_norm_llama_computes_what_transformers_qwen3_computes() -> None:
    transformers = pytest.importorskip("transformers")
    model = _model("llama", qk_norm=True)
    _randomise_norms(model)
    cfg = model.config
    hf = transformers.Qwen3ForCausalLM(
        transformers.Qwen3Config(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.n_embd,
            intermediate_size=cfg.resolved_mlp_hidden,
            num_hidden_layers=cfg.n_layer,
            num_attention_heads=cfg.n_head,
            num_key_value_heads=cfg.resolved_n_kv_head,
            head_dim=cfg.resolved_head_dim,
            max_position_embeddings=cfg.block_size,
            rms_norm_eps=cfg.norm_eps,
            rope_theta=cfg.rope_theta,
            tie_word_embeddings=cfg.tie_embeddings,
            attention_bias=False,
            use_sliding_window=False,
        )
    ).eval()
    ours = model.state_dict()
    theirs: dict[str, torch.Tensor] = {}
    for row in LLAMA.tensors(cfg.n_layer):
        sizes = [hf.state_dict()[name].shape[0] for name in row.theirs]
        theirs.update(zip(row.theirs, ours[row.ours].split(sizes), strict=True))
    for i in range(cfg.n_layer):
        for norm in ("q_norm", "k_norm"):
            theirs[f"model.layers.{i}.self_attn.{norm}.weight"] = ours[
                f"blocks.{i}.attn.{norm}.weight"
            ]
    hf.load_state_dict(theirs, strict=True)
    idx = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, rtol=1e-5, atol=1e-5)


# A Llama with QK-norm exports as Qwen 3 (tests/test_qwen3_hf_interop.py); with another recipe
# option it is still refused, naming that option (the first key of each entry).
REFUSED = [case for case in CASES if case[:2] != ("llama", "qk_norm")] + [
    ("llama", "qk_norm+relu2", {"mlp_activation": "relu2", "qk_norm": True}),
    ("llama", "qk_norm+softcap", {"logit_softcap": 3.0, "qk_norm": True}),
]


@pytest.mark.parametrize(
    ("arch", "name", "options"), REFUSED, ids=[f"{arch}-{name}" for arch, name, _ in REFUSED]
)
def test_hf_export_refuses_options_transformers_cannot_express(
    arch: str, name: str, options: dict[str, Any]
) -> None:
    pytest.importorskip("transformers")
    field = next(iter(options))
    with pytest.raises(ValueError, match=rf"Cannot export .*{field}=.*cannot express"):
        to_hf(_model(arch, **options))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mlp_activation": "swiglu"}, r"mlp_activation must be one of \['gelu', 'relu2'\]"),
        ({"positions": "alibi"}, r"positions must be 'learned' or 'rope'"),
        ({"logit_softcap": 0.0}, r"logit_softcap must be positive"),
        ({"positions": "rope", "n_embd": 36, "n_head": 4}, r"even head dimension"),
    ],
)
def test_bad_option_values_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**SHAPE, **options})


# ---------------------------------------------------------------------------------- Muon


def _named(model: nn.Module) -> dict[int, str]:
    return {id(param): name for name, param in model.named_parameters()}


@pytest.mark.parametrize(
    "model",
    [_model("gpt"), _model("gpt", tie_embeddings=False), _model("llama", qk_norm=True)],
    ids=["gpt-tied", "gpt-untied", "llama-qk-norm"],
)
@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_every_parameter_is_in_exactly_one_group(model: DecoderLM, name: str) -> None:
    optimizer = build_optimizer(
        model, OptimizerConfig(name=name), 1e-3, 0.1, (0.9, 0.95), 1e-8, False
    )
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each once, none left
    if name == "adamw":
        assert isinstance(optimizer, torch.optim.AdamW)
        return
    assert isinstance(optimizer, OptimizerChain)
    muon, adamw = optimizer.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    names = _named(model)
    hidden = (".attn.qkv.weight", ".attn.proj.weight", ".mlp.fc.weight", ".mlp.proj.weight")
    on_muon = {names[id(p)] for group in muon.param_groups for p in group["params"]}
    assert on_muon == {n for n, p in model.named_parameters() if n.endswith(hidden)}


def test_each_role_gets_its_own_lr_and_weight_decay() -> None:
    model = _model("gpt", tie_embeddings=False)
    config = OptimizerConfig(
        name="muon",
        muon=MuonConfig(lr=0.05, weight_decay=0.01),
        embeddings=GroupConfig(lr=0.3),
        head=GroupConfig(lr=0.004, weight_decay=0.02),
        scalars=GroupConfig(lr=0.04, weight_decay=0.5),
    )
    optimizer = build_optimizer(model, config, 1e-3, 0.1, (0.9, 0.95), 1e-8, False)
    setting = {
        id(p): (group["lr"], group["weight_decay"])
        for group in optimizer.param_groups
        for p in group["params"]
    }
    assert setting[id(model.wte.weight)] == (0.3, 0.0)
    assert setting[id(model.wpe.weight)] == (0.3, 0.0)  # type: ignore[union-attr]
    assert setting[id(model.lm_head.weight)] == (0.004, 0.02)
    assert setting[id(model.ln_f.weight)] == (0.04, 0.5)
    assert setting[id(model.blocks[0].attn.qkv.weight)] == (0.05, 0.01)


def test_float32_newton_schulz_matches_torchs_bfloat16_one() -> None:
    from torch.optim._muon import _zeropower_via_newtonschulz

    torch.manual_seed(0)
    for shape in [(96, 32), (32, 96)]:
        grad = torch.randn(shape)
        ours = newton_schulz(grad, (3.4445, -4.775, 2.0315), 5, 1e-7)
        theirs = _zeropower_via_newtonschulz(grad, (3.4445, -4.775, 2.0315), 5, 1e-7)
        assert ours.dtype == torch.float32 and ours.shape == shape
        torch.testing.assert_close(ours, theirs.float(), rtol=0, atol=3e-2)  # bfloat16's error
        singular = torch.linalg.svdvals(ours)
        assert singular.min() > 0.5 and singular.max() < 1.3  # near-orthogonal, as designed


@pytest.mark.parametrize("adjust_lr_fn", ["original", "match_rms_adamw"])
def test_cpu_muon_steps_like_torchs_muon(adjust_lr_fn: str) -> None:
    torch.manual_seed(0)
    start = [torch.randn(48, 16), torch.randn(16, 48)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]
    results = []
    for cls in (Muon, torch.optim.Muon):
        params = [nn.Parameter(p.clone()) for p in start]
        optimizer = cls(params, lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust_lr_fn)
        for step_grads in grads:
            for param, grad in zip(params, step_grads, strict=True):
                param.grad = grad.clone()
            optimizer.step()
        results.append((params, optimizer.state_dict()))
    (ours, our_state), (theirs, their_state) = results
    for mine, reference, first in zip(ours, theirs, start, strict=True):
        # Three updates of size lr * ratio, each within bfloat16's error of torch's.
        torch.testing.assert_close(mine - first, reference - first, rtol=0, atol=0.02 * 0.03 * 3)
        assert not torch.allclose(mine, first)
    assert our_state["state"].keys() == their_state["state"].keys()
    assert our_state["state"][0].keys() == their_state["state"][0].keys()  # checkpoints carry over


def test_unknown_optimizer_is_refused() -> None:
    with pytest.raises(ValueError, match=r"model.optimizer.name must be 'adamw' or 'muon'"):
        OptimizerConfig(name="sgd")


CONFIG = GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False)
CLIP = 0.05
#: Large enough that AdamW steps scale with the gradient (with 1e-8 a step is about lr times the
#: gradient's sign, so last-bit differences would grow to lr).
EPS = 1e-2


def _batches(n: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, CONFIG.vocab_size, (n, CONFIG.block_size + 1), generator=generator)
    return TensorDataset(tokens[:, :-1], tokens[:, 1:])


def _hand_written_muon_adamw(model: DecoderLM, precision: str, steps: int) -> DecoderLM:
    """Muon on block matrices and AdamW on the rest, stepped by hand with the same schedule."""
    hidden = [p for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("blocks.")]
    rest = [p for p in model.parameters() if all(p is not h for h in hidden)]
    muon = Muon(hidden, lr=0.05, weight_decay=0.0)
    adamw = torch.optim.AdamW(
        rest, lr=1e-2, betas=(0.9, 0.95), eps=EPS, weight_decay=0.0, fused=True
    )
    scaler = torch.amp.GradScaler("cpu", enabled=precision == "16-mixed")
    dtype = torch.float16 if precision == "16-mixed" else None
    for step, (inputs, targets) in enumerate(DataLoader(_batches(4 * steps), batch_size=4)):
        factor = warmup_cosine(step, warmup_steps=2, decay_steps=steps, min_ratio=0.1)
        for group in muon.param_groups:
            group["lr"] = 0.05 * factor
        for group in adamw.param_groups:
            group["lr"] = 1e-2 * factor
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(inputs, targets=targets)
        scaler.scale(loss).backward()
        scaler.unscale_(muon)
        scaler.unscale_(adamw)
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        scaler.step(muon)
        scaler.step(adamw)
        scaler.update()
        muon.zero_grad()
        adamw.zero_grad()
    return model


@pytest.mark.parametrize("precision", ["32-true", "16-mixed"])
def test_muon_through_lightning_steps_like_a_hand_written_loop(
    precision: str, one_thread: None
) -> None:
    torch.manual_seed(0)
    module = CausalLMModule(
        CONFIG,
        lr=1e-2,
        min_lr=1e-3,
        warmup_steps=2,
        weight_decay=0.0,
        eps=EPS,
        optimizer=OptimizerConfig(name="muon", muon=MuonConfig(lr=0.05)),
    )
    module.configure_model()
    assert module.model is not None
    reference = _hand_written_muon_adamw(copy.deepcopy(module.model), precision, steps=4)
    fp16 = precision == "16-mixed"
    trainer = Trainer(
        accelerator="cpu",
        max_steps=4,
        precision=None if fp16 else precision,
        plugins=[MixedPrecision("16-mixed", "cpu")] if fp16 else None,
        gradient_clip_val=CLIP,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(_batches(16), batch_size=4))
    for (name, ours), theirs in zip(
        module.model.named_parameters(), reference.parameters(), strict=True
    ):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)


# ------------------------------------------------------------------- Muon resumes exactly

STEPS = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def _fit_muon(root: Path, corpus: Path, steps: int, *extra: str) -> dict[int, float]:
    args = [
        *tiny_args(root, corpus, steps=steps),
        f"--model.lr_decay_steps={STEPS}",
        "--model.warmup_steps=2",
        "--model.optimizer.name=muon",
        "--model.optimizer.embeddings.lr=0.01",
        "--model.arch.qk_norm=true",
        "--model.arch.mlp_activation=relu2",
        "--trainer.val_check_interval=4",
        "--trainer.deterministic=true",
        "--last_checkpoint.every_n_train_steps=100",
    ]
    cli(["fit", f"--config={REPO / 'configs' / 'shakespeare-char.yaml'}", *args, *extra])
    return scalars(root / "logs", "train/loss")


@pytest.mark.slow
def test_muon_resumes_to_the_same_losses(tmp_path: Path, corpus: Path) -> None:
    uninterrupted = _fit_muon(tmp_path / "full", corpus, STEPS)
    first = _fit_muon(tmp_path / "first", corpus, 5)  # last.ckpt at max_steps
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    assert len(state["optimizer_states"][0]["optimizers"]) == 2  # Muon's and AdamW's
    resumed = _fit_muon(tmp_path / "resumed", corpus, STEPS, f"--ckpt_path={checkpoint}")
    assert sorted(resumed) == list(range(5, STEPS))
    assert {**first, **resumed} == uninterrupted
