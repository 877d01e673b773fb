"""What machine a measurement ran on: recorded beside every benchmark and study result."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["machine_info"]


def machine_info() -> dict:
    """CPU model, torch threads and version, and the GPU if any."""
    import torch

    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__, "gpu": gpu}
