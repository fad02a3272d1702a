"""Training and validation samples: windows of ``block_size + 1`` tokens from a token stream.

A window ``w`` gives inputs ``x = w[:-1]`` and targets ``y = w[1:]`` (int64). Training batches are
a pure function of ``(seed, batch index, rank)``, which makes them reproducible, disjoint across
data-parallel ranks and resumable from a batch count alone:

- The tokens are one stream across shard files (``shards.TokenStream``): windows are positions in
  that stream, so they do not depend on how it is cut into shards, and may cross shard ends.
- Each epoch cuts the tokens into ``windows_per_epoch`` non-overlapping windows, shifted by a
  random start offset in ``[0, block_size)`` (so epochs see different window alignments) and
  visited in a random permutation; both come from ``np.random.default_rng((seed, epoch))``.
- Global sample ``g = (k * world_size + rank) * batch_size + i`` is row ``i`` of micro-batch ``k``
  on rank ``rank``; sample ``g`` is window ``perm[g % n]`` of epoch ``g // n``. Ranks therefore
  draw disjoint windows at every step, and together they walk through each epoch once.
- With ``num_workers`` DataLoader workers, worker ``w`` makes batches ``k = start + w (mod
  num_workers)``; the DataLoader takes batches from its workers in turn, so the order is the same
  for any number of workers.
"""

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from llm_torch.data.shards import TokenStream

Batch = tuple[torch.Tensor, torch.Tensor]
"""``(inputs, targets)``, both int64, targets shifted one token to the left."""


def _to_batch(windows: npt.NDArray[Any]) -> Batch:
    """Splits ``(..., block_size + 1)`` token windows into int64 inputs and targets.

    ``astype`` copies each into a fresh contiguous array, so models may ``view`` them.
    """
    inputs = windows[..., :-1].astype(np.int64)
    targets = windows[..., 1:].astype(np.int64)
    return torch.from_numpy(inputs), torch.from_numpy(targets)


class ValWindows(Dataset[Batch]):
    """Validation samples: consecutive non-overlapping windows from the start of the split.

    Fixed and deterministic, so validation loss compares across runs and checkpoints;
    ``Trainer(limit_val_batches=n)`` evaluates the same first ``n`` batches every time.

    Args:
        tokens: The validation tokens.
        block_size: Tokens per sample (windows hold ``block_size + 1``).
    """

    def __init__(self, tokens: TokenStream, block_size: int) -> None:
        self.tokens = tokens
        self.block_size = block_size
        self._length = (len(tokens) - 1) // block_size

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Batch:
        if not 0 <= index < self._length:
            raise IndexError(f"Validation window {index} is outside range({self._length}).")
        start = index * self.block_size
        return _to_batch(self.tokens.read(start, start + self.block_size + 1))


class TrainBatches(IterableDataset[Batch]):
    """An endless stream of training batches ``(B, block_size)``; see the module docstring.

    Use with ``DataLoader(batch_size=None)``: each item is already a whole batch, gathered from the
    memory maps in one vectorised read per shard. Bound training with ``Trainer(max_steps=...)``.

    Args:
        tokens: The training tokens.
        block_size: Tokens per sample (windows hold ``block_size + 1``).
        batch_size: Samples per micro-batch (per rank).
        seed: Seed of the window order.
        rank: This process's data-parallel rank.
        world_size: Number of data-parallel ranks.

    Attributes:
        start: Shared one-element tensor: the micro-batch index the next iteration begins at. It
            lives in shared memory so that persistent DataLoader workers see updates.
        windows_per_epoch: Windows in each epoch.
    """

    def __init__(
        self,
        tokens: TokenStream,
        block_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in range(world_size={world_size}), got {rank}.")
        count = len(tokens)
        if count < block_size + 1:
            raise ValueError(f"{count} tokens cannot fill one window of {block_size + 1}.")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start = torch.zeros((), dtype=torch.int64).share_memory_()
        # One window less than fits, when more than one fits, leaves room for a random shift of up
        # to block_size - 1 tokens with the same number of windows in every epoch.
        self.windows_per_epoch = max(1, (count - 1) // block_size - 1)
        self._max_shift = min(block_size - 1, count - 1 - self.windows_per_epoch * block_size)
        self._epochs: dict[int, tuple[int, npt.NDArray[np.int64]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_epochs": {}}  # workers recompute; no permutation copies

    def _epoch(self, epoch: int) -> tuple[int, npt.NDArray[np.int64]]:
        """Returns the epoch's ``(shift, permutation)``; keeps the last two epochs cached."""
        if epoch not in self._epochs:
            rng = np.random.default_rng((self.seed, epoch))
            shift = int(rng.integers(self._max_shift + 1))
            self._epochs[epoch] = (shift, rng.permutation(self.windows_per_epoch))
            while len(self._epochs) > 2:
                del self._epochs[min(self._epochs)]
        return self._epochs[epoch]

    def window_starts(self, batch_index: int) -> npt.NDArray[np.int64]:
        """Token offsets of the windows in micro-batch ``batch_index`` on this rank."""
        first = (batch_index * self.world_size + self.rank) * self.batch_size
        samples = first + np.arange(self.batch_size)
        epochs, slots = np.divmod(samples, self.windows_per_epoch)
        starts = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            shift, permutation = self._epoch(int(epoch))
            mask = epochs == epoch
            starts[mask] = shift + permutation[slots[mask]] * self.block_size
        return starts

    def batch(self, batch_index: int) -> Batch:
        """Micro-batch ``batch_index`` on this rank: one gather per shard touched."""
        return _to_batch(self.tokens.windows(self.window_starts(batch_index), self.block_size + 1))

    def __iter__(self) -> Iterator[Batch]:
        worker = get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        batch_index = int(self.start) + worker_id
        while True:
            yield self.batch(batch_index)
            batch_index += num_workers
