"""LightningDataModule over any pair of datasets that yield the samplers' dicts."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset, IterableDataset


class VideoDataModule(L.LightningDataModule):
    """Wraps a train and a validation dataset (shapes world or webdataset shards) in DataLoaders.

    Batches are the samplers' dicts collated by the default collate: tensors gain a leading batch
    axis (e.g. ``video`` (B, F, C, H, W)), ``caption`` and ``meta`` become lists of strings.
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset | None = None,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.datamodule.batch_size must be a positive integer, got {batch_size}.")
        if num_workers < 0:
            raise ValueError(f"data.datamodule.num_workers must be >= 0, got {num_workers}.")
        self.train_set = train
        self.val_set = val
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        iterable = isinstance(dataset, IterableDataset)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle and not iterable,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)
