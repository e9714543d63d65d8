"""Process-group setup for ``torchrun`` and the differentiable all-gather the losses need.

One process needs no launcher: without ``WORLD_SIZE`` in the environment everything here is a no-op
(``world_size == 1``). Under ``torchrun --nproc_per_node N`` the usual environment variables
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) start a process group:
NCCL when the device is CUDA, gloo on the CPU.

Gradients are synchronised by :func:`all_reduce_gradients` (one flat all-reduce per dtype, averaged
over ranks) instead of wrapping the model in ``DistributedDataParallel``: the losses use methods other
than ``forward`` (X-Pool's ``score`` runs its fusion on gathered features), which DDP's hooks do not
expect. Together with :func:`all_gather_with_grad` the result is *exactly* the single-process
gradient on the same global batch (see the note on that function).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this process's CUDA device if there is one, else the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return dev


def init_distributed(device: str = "auto") -> DistEnv:
    """Read the torchrun environment and start the process group (if any). Safe to call twice."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world <= 1:
        return DistEnv(0, 1, 0, dev, "")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllGather(torch.autograd.Function):
    """Concatenate every rank's tensor along dim 0; backward returns this rank's slice of the SUMMED grads.

    Every rank computes the same loss L on the gathered batch. The gradient of L with respect to this
    rank's features therefore receives one identical contribution per rank; summing them (all-reduce)
    gives ``world_size * dL/dx``, and the averaging in :func:`all_reduce_gradients` divides it back, so
    parameters receive exactly dL/dθ, as in one process holding the whole global batch.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        sizes = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
        all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
        dist.all_gather(all_sizes, sizes)
        ctx.sizes = [int(s.item()) for s in all_sizes]
        ctx.rank = dist.get_rank()
        if len(set(ctx.sizes)) != 1:
            raise RuntimeError(f"all_gather_with_grad needs equal local batches, got {ctx.sizes}")
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``torch.cat`` of every rank's ``x`` (rank order) that carries gradients back; identity in one process."""
    if _world() == 1:
        return x
    return _AllGather.apply(x)


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average ``.grad`` over ranks (a missing grad counts as zero on that rank and is created)."""
    world = _world()
    if world == 1:
        return
    by_dtype: dict[tuple, list[torch.nn.Parameter]] = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        by_dtype.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


def broadcast_parameters(module: torch.nn.Module, src: int = 0) -> None:
    """Make every rank start from rank ``src``'s weights and buffers."""
    if _world() == 1:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def all_reduce_mean(value: float, device: torch.device) -> float:
    """The mean of a Python number over ranks (for logging)."""
    if _world() == 1:
        return float(value)
    t = torch.tensor([float(value)], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / _world()


def min_over_ranks(value: int, device: torch.device) -> int:
    """The smallest of every rank's integer (one all-reduce)."""
    if _world() == 1:
        return int(value)
    t = torch.tensor([int(value)], device=device, dtype=torch.long)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def barrier() -> None:
    if _world() > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Send a picklable object from rank ``src`` to all ranks; returns it on every rank."""
    if _world() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src)
    return holder[0]
