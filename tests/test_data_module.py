"""TextDataModule batches: shifted targets, fixed validation, sampling order, DDP and resume."""

import itertools
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from bpe_helpers import real_encoding, tiny_ranks
from data_helpers import read_tokens, words_text, write
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from llm_torch.data import DataError, TextDataModule
from llm_torch.data.windows import Batch, TrainBatches

BLOCK = 16
BATCH = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A ~40 kB text file and the cache folder for it."""
    folder = tmp_path_factory.mktemp("corpus")
    return write(folder, "a.txt", words_text(8_000)), folder / "cache"


def make(corpus: tuple[Path, Path], **kwargs: object) -> TextDataModule:
    """A prepared and set-up byte-level data module over ``corpus``."""
    source, cache_dir = corpus
    options: dict = {"tokenizer": "byte", "block_size": BLOCK, "batch_size": BATCH}
    data = TextDataModule(
        str(source), cache_dir=str(cache_dir), progress=False, **{**options, **kwargs}
    )
    data.prepare_data()
    data.setup("fit")
    return data


def take(data: TextDataModule, count: int) -> list[Batch]:
    return list(itertools.islice(iter(data.train_dataloader()), count))


def assert_same(a: list[Batch], b: list[Batch]) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)


def test_inputs_and_targets_are_windows_shifted_by_one(corpus: tuple[Path, Path]) -> None:
    data = make(corpus)
    raw = np.array(read_tokens(data.cache_path, "train"))
    dataset = data.train_dataloader().dataset
    assert isinstance(dataset, TrainBatches)
    for k, (x, y) in enumerate(take(data, 3)):
        assert x.shape == y.shape == (BATCH, BLOCK) and x.dtype == y.dtype == torch.int64
        assert x.is_contiguous() and y.is_contiguous()  # models may .view() them
        for row, start in enumerate(dataset.window_starts(k)):
            assert x[row].tolist() == raw[start : start + BLOCK].tolist()
            assert y[row].tolist() == raw[start + 1 : start + BLOCK + 1].tolist()


def test_validation_windows_are_fixed_consecutive_and_identical(corpus: tuple[Path, Path]) -> None:
    first, second = make(corpus), make(corpus, seed=7, batch_size=3)
    raw = read_tokens(first.cache_path, "val")
    assert first.val_dataset is not None and len(first.val_dataset) == (len(raw) - 1) // BLOCK
    batches = list(first.val_dataloader())
    x = torch.cat([batch[0] for batch in batches])
    y = torch.cat([batch[1] for batch in batches])
    assert x.flatten().tolist() == raw[: len(x) * BLOCK]
    assert y[:, -1].tolist() == raw[BLOCK : (len(x) + 1) * BLOCK : BLOCK]
    assert_same([(x, y)], [tuple(torch.cat(t) for t in zip(*second.val_dataloader(), strict=True))])


def test_order_is_deterministic_per_seed_and_differs_across_seeds(
    corpus: tuple[Path, Path],
) -> None:
    assert_same(take(make(corpus, seed=3), 5), take(make(corpus, seed=3), 5))
    different = take(make(corpus, seed=4), 5)
    assert not all(
        torch.equal(a[0], b[0])
        for a, b in zip(take(make(corpus, seed=3), 5), different, strict=True)
    )


def test_an_epoch_visits_every_window_once_with_a_random_shift(corpus: tuple[Path, Path]) -> None:
    data = make(corpus, batch_size=8)
    dataset = data.train_dataloader().dataset
    assert isinstance(dataset, TrainBatches)
    per_epoch = dataset.windows_per_epoch
    samples = np.arange(per_epoch * 2)  # two epochs, as one flat list of global sample indices
    starts = np.concatenate([dataset.window_starts(k) for k in range(len(samples) // 8 + 1)])
    epochs = [np.sort(starts[:per_epoch]), np.sort(starts[per_epoch : 2 * per_epoch])]
    for epoch in epochs:
        assert len(np.unique(epoch)) == per_epoch and np.all(np.diff(epoch) == BLOCK)
    assert epochs[0][0] != epochs[1][0]  # another alignment in the second epoch


def test_ddp_ranks_get_disjoint_windows_at_each_step(corpus: tuple[Path, Path]) -> None:
    ranks = [make(corpus, rank=r, world_size=3).train_dataloader().dataset for r in range(3)]
    single = make(corpus, batch_size=3 * BATCH).train_dataloader().dataset
    for k in range(20):
        starts = [set(dataset.window_starts(k).tolist()) for dataset in ranks]  # type: ignore[attr-defined]
        assert sum(map(len, starts)) == len(set.union(*starts)) == 3 * BATCH
        # Together the ranks draw what one process with a 3x batch would draw.
        assert set.union(*starts) == set(single.window_starts(k).tolist())  # type: ignore[attr-defined]


def test_rank_and_position_come_from_the_trainer_when_attached(corpus: tuple[Path, Path]) -> None:
    data = make(corpus)
    progress = SimpleNamespace(total=SimpleNamespace(processed=3))  # 3 micro-batches trained on
    data.trainer = SimpleNamespace(  # type: ignore[assignment]  # only what the module reads
        distributed_sampler_kwargs={"num_replicas": 2, "rank": 1},
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
    )
    loader = data.train_dataloader()
    dataset = loader.dataset
    assert isinstance(dataset, TrainBatches) and (dataset.rank, dataset.world_size) == (1, 2)
    assert data.state_dict() == {"batches_consumed": 3}
    assert_same(list(itertools.islice(loader, 2)), [dataset.batch(3), dataset.batch(4)])
    assert data.state_dict() == {"batches_consumed": 3}  # the loader does not count in a trainer


def test_state_dict_resume_reproduces_batches(corpus: tuple[Path, Path]) -> None:
    reference = take(make(corpus), 8)
    data = make(corpus)
    loader = data.train_dataloader()
    assert_same(list(itertools.islice(loader, 5)), reference[:5])
    state = data.state_dict()
    assert state == {"batches_consumed": 5}
    resumed = make(corpus)
    resumed.load_state_dict(state)
    assert_same(take(resumed, 3), reference[5:8])


def test_two_workers_give_the_same_batches_and_rewind_on_reload(corpus: tuple[Path, Path]) -> None:
    reference = take(make(corpus), 7)
    data = make(corpus, num_workers=2)
    loader = data.train_dataloader()
    assert loader.persistent_workers
    assert_same(list(itertools.islice(loader, 5)), reference[:5])
    data.load_state_dict({"batches_consumed": 2})  # the persistent workers must restart there
    assert_same(list(itertools.islice(loader, 5)), reference[2:7])
    assert data.state_dict() == {"batches_consumed": 7}


class _Recorder(L.LightningModule):
    """A tiny model that records every training input it sees."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab_size, 4)
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.seen.append(x.clone())
        return self.embedding(x).mean() + 0 * y.sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(data: TextDataModule, root: Path, ckpt_path: str | None = None) -> _Recorder:
    model = _Recorder(data.vocab_size)
    checkpoints = ModelCheckpoint(dirpath=root, every_n_train_steps=2, save_top_k=-1)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=6,
        accumulate_grad_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoints],
        default_root_dir=root,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model


def test_trainer_resume_sees_exactly_the_uninterrupted_batches(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    full = _fit(make(corpus), tmp_path)
    assert len(full.seen) == 12  # 6 steps of 2 accumulated micro-batches
    checkpoint = tmp_path / "epoch=0-step=2.ckpt"
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["TextDataModule"] == {"batches_consumed": 4}
    assert saved["datamodule_hyper_parameters"]["block_size"] == BLOCK
    resumed = _fit(make(corpus), tmp_path / "resumed", ckpt_path=str(checkpoint))
    torch.testing.assert_close(torch.stack(resumed.seen), torch.stack(full.seen[4:]))


def test_gpt2_and_vocab_size_are_known_after_init(corpus: tuple[Path, Path]) -> None:
    real_encoding("r50k_base")  # skips when GPT-2's file is not cached
    data = TextDataModule(str(corpus[0]), tokenizer="gpt2", cache_dir=str(corpus[1]))
    assert data.vocab_size == 50257 and data.tokenizer.eot_id == 50256


def test_bpe_file_and_vocab_size_are_known_after_init(
    corpus: tuple[Path, Path], tiny_bpe: Path
) -> None:
    spec = f"tiktoken:{tiny_bpe}"
    data = TextDataModule(str(corpus[0]), tokenizer=spec, cache_dir=str(corpus[1]))
    ranks = len(tiny_ranks())
    # Llama 3's layout: 256 special tokens after the ranks, <|end_of_text|> the second of them.
    assert data.vocab_size == ranks + 256 and data.tokenizer.eot_id == ranks + 1
    assert not data.cache_path.exists()  # known without preparing the data


class _VocabModel(L.LightningModule):
    def __init__(self, vocab_size: int = 1) -> None:
        super().__init__()
        self.vocab_size = vocab_size


class _LinkingCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")


def test_lightning_cli_links_a_learned_char_vocab_size(corpus: tuple[Path, Path]) -> None:
    args = [f"--data.source={corpus[0]}", "--data.tokenizer=char", f"--data.cache_dir={corpus[1]}"]
    cli = _LinkingCLI(
        _VocabModel, TextDataModule, run=False, args=args, seed_everything_default=False
    )
    chars = "".join(sorted(set(words_text(8_000))))  # all appear in the training part
    assert cli.datamodule.tokenizer.spec == {"name": "char", "chars": chars}
    assert cli.model.vocab_size == cli.datamodule.vocab_size == len(chars) + 1


@pytest.mark.parametrize("value", [0, -3])
def test_block_size_and_batch_size_must_be_positive(corpus: tuple[Path, Path], value: int) -> None:
    with pytest.raises(DataError, match=rf"block_size must be a positive integer, got {value}"):
        TextDataModule(str(corpus[0]), block_size=value)
    with pytest.raises(DataError, match=rf"batch_size must be a positive integer, got {value}"):
        TextDataModule(str(corpus[0]), batch_size=value)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_val_fraction_must_be_inside_zero_one(corpus: tuple[Path, Path], fraction: float) -> None:
    with pytest.raises(DataError, match=r"val_fraction must be between 0 and 1 .*Fix"):
        TextDataModule(str(corpus[0]), tokenizer="byte", val_fraction=fraction)


@pytest.mark.parametrize(("rank", "world_size"), [(2, 2), (-1, 2), (0, None), (None, 2)])
def test_rank_override_needs_a_matching_world_size(
    corpus: tuple[Path, Path], rank: int | None, world_size: int | None
) -> None:
    with pytest.raises(DataError, match="must be given together with 0 <= rank < world_size"):
        TextDataModule(str(corpus[0]), tokenizer="byte", rank=rank, world_size=world_size)
