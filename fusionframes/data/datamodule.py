"""LightningDataModule over any pair of datasets that yield the samplers' dicts, with resumable loading."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.data import sized_len
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from fusionframes.utils.validation import check_int


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def worker_init(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT: Ctrl+C reaches the whole process group, and the main process
    finishes its step and stops them itself. Seeds them as Lightning does under ``seed_everything(workers=True)``
    (which it skips for loaders that bring their own ``worker_init_fn``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id)


class ResumableSampler(Sampler[int]):
    """Index order of one epoch (a permutation seeded by (seed, epoch), or 0..n-1) from global position
    ``start``, split across distributed ranks (rank r takes positions r, r+W, ...; the tail that does not
    fill every rank is dropped).

    Lightning calls ``set_epoch`` each epoch; ``start`` skips samples consumed before a resume (by any
    number of ranks) and is reset after one pass. Sharding here, rather than by Lightning's
    DistributedSampler, keeps the resume position exact (``trainer.use_distributed_sampler`` is off).
    """

    def __init__(self, length: int, shuffle: bool, seed: int = 0) -> None:
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.length)
        start, self.start = self.start, 0
        rank, world = _rank_and_world()
        order = order[start:]
        order = order[: len(order) - len(order) % world]
        return iter(order[rank::world].tolist())

    def __len__(self) -> int:
        """Indices of a whole epoch on this rank: Lightning counts a resumed epoch's batches from its checkpoint."""
        return self.length // _rank_and_world()[1]


class ResumableDataLoader(DataLoader):
    """DataLoader whose position within the epoch is saved in Lightning checkpoints and restored on resume.

    Lightning stores ``state_dict()`` of stateful loaders in the checkpoint and calls ``load_state_dict``
    before iterating again. Map-style datasets skip the consumed indices without loading them (also when
    the number of ranks changed); iterable datasets (webdataset) are advanced by drawing and dropping the
    consumed batches, and their pass count (``epoch``, which seeds their shuffling) is restored before the
    workers start. A checkpoint taken after the last batch of a pass resumes at the start of the next one.
    """

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, **kwargs: Any) -> None:
        iterable = isinstance(dataset, IterableDataset)
        self._resumable_sampler = None if iterable else ResumableSampler(len(dataset), shuffle, seed)
        super().__init__(dataset, batch_size=batch_size, sampler=self._resumable_sampler, **kwargs)
        self.batches_seen = 0  # handed out by this rank since the current pass started
        self.passes = 0  # passes (epochs) started
        self._pass_start = 0  # samples (all ranks) consumed in this epoch before the current pass
        self._pass_batches: int | None = None  # batches left in the current pass, where the loader has a length
        self._resume_from = 0
        self._exhausted = False

    def __iter__(self) -> Iterator[Any]:
        self._pass_start, self._resume_from = self._resume_from, 0
        length = sized_len(self)  # batches of a whole epoch
        self._pass_batches = None if length is None else length - self._pass_start // (
            self.batch_size * _rank_and_world()[1])
        self.batches_seen = 0
        self.passes += 1
        self._exhausted = False
        iterator = super().__iter__()
        if self._resumable_sampler is None:
            for _ in range(self._pass_start // (self.batch_size * _rank_and_world()[1])):
                next(iterator)
        for batch in iterator:
            self.batches_seen += 1
            yield batch
        self._exhausted = True

    def state_dict(self) -> dict[str, int]:
        """Where the next batch comes from: ``pass`` (0-based) and the samples all ranks consumed in it.

        Lightning's fetcher draws one batch ahead from loaders without a length (iterable datasets) to see
        the end of the epoch coming; until the stream ends, that batch is handed out but not yet trained on.
        """
        if self._exhausted or (self._pass_batches is not None and self.batches_seen >= self._pass_batches):
            return {"pass": self.passes, "samples_seen": 0}
        ahead = int(self._pass_batches is None and self.batches_seen > 0)
        consumed = self._pass_start + (self.batches_seen - ahead) * self.batch_size * _rank_and_world()[1]
        return {"pass": max(self.passes - 1, 0), "samples_seen": consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_from = int(state["samples_seen"])
        self.passes = int(state.get("pass", 0))  # the next __iter__ starts this pass (again)
        if self._resumable_sampler is not None:
            self._resumable_sampler.start = self._resume_from
        elif hasattr(self.dataset, "epoch"):
            self.dataset.epoch = self.passes  # copied into the workers when they start


class VideoDataModule(L.LightningDataModule):
    """Wraps a train and a validation dataset (shapes world or webdataset shards) in DataLoaders.

    Batches are the samplers' dicts collated by the default collate: tensors gain a leading batch
    axis (e.g. ``video`` (B, F, C, H, W)), ``caption`` and ``meta`` become lists of strings.
    The training loader resumes mid-epoch where a checkpoint left it.
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset | None = None,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_int("data.datamodule.batch_size", batch_size, 1)
        if val_batch_size is not None:
            check_int("data.datamodule.val_batch_size", val_batch_size, 1)
        check_int("data.datamodule.num_workers", num_workers, 0)
        check_int("data.datamodule.seed", seed, 0)
        self.train_set = train
        self.val_set = val
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.shuffle = shuffle
        self.seed = seed

    def _loader_kwargs(self) -> dict[str, Any]:
        return dict(num_workers=self.num_workers, pin_memory=self.pin_memory,
                    persistent_workers=self.num_workers > 0, worker_init_fn=worker_init if self.num_workers else None)

    def train_dataloader(self) -> ResumableDataLoader:
        return ResumableDataLoader(self.train_set, self.batch_size, shuffle=self.shuffle, seed=self.seed,
                                   drop_last=True, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.val_batch_size, shuffle=False, **self._loader_kwargs())
