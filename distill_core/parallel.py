"""Data parallelism on torch.distributed: one process per rank, launched by torchrun (or srun).

A run's outer step averages the exact hypergradients of its draws (real batch, theta_0). Draw j of a
step always comes from draw stream j, whatever process computes it, so N ranks with meta-batch K
and one process with meta-batch K x N make the same draws and the same update (up to the order of a
float sum). Every rank advances every stream and holds the same distilled data; rank 0 alone writes.

Nothing here starts processes: torchrun does (`torchrun --nproc-per-node N -m distill_core distill ...`).
Under Slurm, `srun` sets SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, read here when torchrun's
variables are absent; MASTER_ADDR and MASTER_PORT must name the first node (README, "Scaling out").
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass

import torch

from .errors import UserError

__all__ = ["World", "init_world", "current_world", "sum_across", "any_across", "gather_json", "check_in_sync",
           "RanksDiverged"]

TIMEOUT = datetime.timedelta(hours=3)   # rank 0 evaluates alone while the others wait in the next all-reduce


class RanksDiverged(RuntimeError):
    """The ranks no longer hold the same distilled data (a nondeterministic kernel, a bad node, a bug)."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(*names: str) -> int | None:
    for name in names:
        raw = os.environ.get(name)
        if raw not in (None, ""):
            try:
                return int(raw)
            except ValueError:
                raise UserError(f"environment variable {name}={raw!r} is not an integer") from None
    return None


def current_world() -> World:
    """The process group already initialised in this process, or a world of one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0,
                     dist.get_backend())
    return World()


def init_world(device: str = "auto") -> World:
    """Join the process group that torchrun or srun describes (a world of one when there is none).

    The backend follows the device: nccl where CUDA is used, gloo otherwise.
    """
    import torch.distributed as dist

    size = _env_int("WORLD_SIZE", "SLURM_NTASKS") or 1
    if size <= 1:
        return World()
    if dist.is_initialized():
        return current_world()
    rank = _env_int("RANK", "SLURM_PROCID")
    local = _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0
    if rank is None:
        raise UserError("WORLD_SIZE is set but RANK is not: launch with torchrun or srun")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise UserError(f"{name} is not set: torchrun sets it; under srun export it (README, 'Scaling out')")
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(size))
    cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local % max(1, torch.cuda.device_count()))
    dist.init_process_group(backend, rank=rank, world_size=size, timeout=TIMEOUT)
    return World(rank, size, local, backend)


def rank_device(device: str, world: World) -> str:
    """Each rank's own GPU when CUDA is used; the device as given otherwise."""
    if world.distributed and torch.cuda.is_available() and device in ("auto", "cuda"):
        return f"cuda:{world.local_rank % torch.cuda.device_count()}"
    return device


def sum_across(flat: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `flat` over all ranks (in place; a no-op in a world of one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return flat


def any_across(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when it is true on any (stop requests, time budgets: all ranks stop together)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_json(obj, device: torch.device | str = "cpu") -> list:
    """Every rank's JSON-able `obj`, in rank order, on every rank (bytes over the wire, never pickle)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    data = torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8, device=device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64, device=device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: data.numel()] = data
    parts = [torch.zeros(longest, dtype=torch.uint8, device=device) for _ in sizes]
    dist.all_gather(parts, padded)
    return [json.loads(bytes(p[: int(n.item())].tolist()).decode()) for p, n in zip(parts, sizes)]


def check_in_sync(tensors: dict[str, torch.Tensor], step: int, rtol: float = 1e-6) -> None:
    """Raise RanksDiverged on every rank unless all ranks hold the same tensors (compared by float64
    sums and sums of squares, so the check costs one small all-gather)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    names = sorted(tensors)
    mine = torch.stack([v for n in names for v in (tensors[n].detach().double().sum(),
                                                  tensors[n].detach().double().pow(2).sum())])
    everyone = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    ref = everyone[0]
    for r, other in enumerate(everyone[1:], 1):
        gap = (other - ref).abs() / ref.abs().clamp_min(1e-12)
        if not torch.isfinite(other).all() or float(gap.max()) > rtol:
            worst = names[int(gap.argmax()) // 2]
            raise RanksDiverged(f"rank {r} no longer holds rank 0's distilled data at outer step {step} "
                                f"({worst}: relative gap {float(gap.max()):.2e} > {rtol:g})")
