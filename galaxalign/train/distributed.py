"""Several processes (GPUs or nodes) under torchrun: process group, batch shards and feature gathering."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """This process's place among the processes of one run.

    ``rank`` counts processes over all nodes, ``local_rank`` those of this
    node (one per GPU). With ``world_size`` 1 no method communicates, so the
    single-process trainer runs the same code.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_process_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is the process that writes checkpoints, logs and metrics (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """Return True on every process when ``flag`` is True on at least one of them."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def shard(self, positions: np.ndarray) -> np.ndarray:
        """Return this process's contiguous share of a batch whose length the world size divides."""
        if len(positions) % self.world_size:
            raise ValueError(
                f"a batch of {len(positions)} galaxies cannot be split evenly over {self.world_size} "
                "processes; choose batch_size as a multiple of the number of processes"
            )
        size = len(positions) // self.world_size
        return positions[self.rank * size : (self.rank + 1) * size]

    def gather(self, features: torch.Tensor) -> torch.Tensor:
        """Concatenate the (B, D) ``features`` of all processes in rank order, keeping the gradients.

        The backward pass sends each process the gradient of its own rows, summed
        over the processes. Every process computes the same loss from the same
        gathered rows, and DistributedDataParallel averages the weight gradients
        over the processes, so the update equals that of one process with the
        whole batch, up to float rounding.
        """
        if not self.enabled:
            return features
        return torch.cat(dist_functional.all_gather(features), dim=0)

    def broadcast_object(self, value: object) -> object:
        """Return rank 0's ``value`` on every process."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Destroy the process group if :func:`setup_distributed` created it."""
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(device: torch.device) -> tuple[DistributedContext, torch.device]:
    """Join the process group that torchrun describes in the environment, if there is one.

    Reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``. Returns the context and
    the device this process trains on: ``cuda:LOCAL_RANK`` when ``device`` is a
    CUDA device, else ``device`` itself. The backend is NCCL on GPUs and gloo
    on CPUs. Without torchrun (``WORLD_SIZE`` unset or 1) nothing happens.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        # NOTE: the NCCL path on GPUs has not been run; the gloo path on CPUs is tested.
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"

    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        owns = True
    elif dist.get_world_size() != world_size:
        raise RuntimeError(
            f"the process group has {dist.get_world_size()} processes but WORLD_SIZE is {world_size}; "
            "start the run with torchrun and do not initialise another process group"
        )
    context = DistributedContext(rank, world_size, local_rank, owns)
    logger.info(
        "process %d of %d (local rank %d), %s backend, device %s",
        rank,
        world_size,
        local_rank,
        backend,
        device,
    )
    return context, device
