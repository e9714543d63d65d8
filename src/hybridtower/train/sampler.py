"""Deterministic global batches, sharded over ranks and split into micro-batches.

Epoch ``e`` visits the dataset in the order ``randperm(N)`` drawn from a generator seeded with
``(seed, e)``; global batch ``s`` is positions ``[s*B, (s+1)*B)`` of that order (the last incomplete
batch is dropped, as in the release). Rank ``r`` of ``W`` takes the ``r``-th contiguous ``B/W`` slice,
so gathering the ranks' features in rank order rebuilds the global batch exactly: the same loss as
one process on the same ``B`` items. The sampler position is just ``(epoch, step_in_epoch)``, which is
what ``--resume`` stores.
"""

from __future__ import annotations

import torch

from ..core.errors import ConfigError


def epoch_order(num_items: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(num_items, generator=g).tolist()


def check_batch_layout(global_batch: int, world_size: int, grad_accum: int) -> int:
    """The per-rank micro-batch size; an error names the numbers that do not divide."""
    if global_batch < 1 or grad_accum < 1:
        raise ConfigError("batch_size and grad_accum must be >= 1")
    if global_batch % (world_size * grad_accum):
        raise ConfigError(
            f"batch_size {global_batch} (global) must be divisible by processes x grad_accum = "
            f"{world_size} x {grad_accum}"
        )
    return global_batch // (world_size * grad_accum)


class GlobalBatchSampler:
    """Yields, for each step of an epoch, this rank's list of dataset indices (``B / W`` of them).

    ``start_step`` skips the steps already done in this epoch (resume).
    """

    def __init__(self, num_items: int, global_batch: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, epoch: int = 0, start_step: int = 0):
        if global_batch > num_items:
            raise ConfigError(
                f"batch_size {global_batch} exceeds the {num_items} training items; lower --batch-size"
            )
        if global_batch % world_size:
            raise ConfigError(f"batch_size {global_batch} must be divisible by the {world_size} processes")
        self.num_items = num_items
        self.global_batch = global_batch
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = epoch
        self.start_step = start_step

    @property
    def steps_per_epoch(self) -> int:
        return self.num_items // self.global_batch

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch - self.start_step)

    def __iter__(self):
        order = epoch_order(self.num_items, self.seed, self.epoch)
        local = self.global_batch // self.world_size
        for step in range(self.start_step, self.steps_per_epoch):
            batch = order[step * self.global_batch : (step + 1) * self.global_batch]
            yield batch[self.rank * local : (self.rank + 1) * local]
