"""Multi-process runs (``torchrun`` / ``accelerate launch``): what every recipe needs to behave like one process.

Every process runs the whole recipe on the same data; ``Trainer`` shards batches and gathers predictions
(``gather_for_metrics`` drops the samples ``DistributedSampler`` repeats to even out the last batch). Only the main
process writes to ``--output_dir`` (``trainer.is_world_process_zero()``). These helpers cover the rest.
"""

from __future__ import annotations


def end_process_group() -> None:
    """Destroy the default process group if this process started one (no-op in a single-process run).

    Without it, torch warns at exit (NCCL: "process group has NOT been destroyed") and can abort there, which the
    launcher then reports as a failed run.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def full_state_dict(trainer):
    """The trained weights to save, or None when ``trainer.model`` already holds them whole (one process, DDP, ZeRO-2).

    Under FSDP each process holds a shard; the full weights are gathered onto the main process, so EVERY process
    must call this (it is a collective), before the main-process-only saving.
    """
    if getattr(trainer, "is_fsdp_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.model)
    return None
