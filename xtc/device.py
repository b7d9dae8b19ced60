"""The device a job runs on: the one it was told, or a one-line stop before any data is loaded.

The workflow passes ``--device cuda`` to every job that holds a GPU (``resources.gpu`` > 0) and ``--device cpu``
otherwise (``xtc.study.jobs``). :func:`require_device` is the first thing a training, evaluation or augmentation
command does: a job told ``cuda`` on a node whose driver does not match the wheel, or whose GPU SLURM did not
expose, stops in its first seconds with what it found and the fix -- instead of training on the CPU until the
scheduler's time limit kills it. Without ``--device`` (the bare command), CUDA is used when it works.

:func:`device_info` is what a run records about where it ran (the log at start, ``manifest.json``): the device,
its name and memory, torch and CUDA versions, threads and the precision settings.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


class DeviceError(ValueError):
    """The device a job was told to use is not usable here; the message says what was found and the fix."""


def driver_version() -> str | None:
    """The loaded NVIDIA kernel driver's version (``/proc/driver/nvidia/version``), or None without one."""
    try:
        line = NVIDIA_DRIVER.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    words = line.split()
    return next((w for w in words if w[:1].isdigit() and "." in w), line.strip())


def cuda_findings() -> str:
    """What a CUDA check sees, for the error message: the wheel's CUDA, the driver, the visible devices."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    wheel = torch.version.cuda
    return (f"torch {torch.__version__} built for CUDA {wheel}" if wheel else
            f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)") + (
        f"; NVIDIA driver {driver_version()}" if driver_version() else "; no NVIDIA driver loaded") + (
        f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "; CUDA_VISIBLE_DEVICES unset")


def _cuda_fix() -> str:
    if not torch.version.cuda:
        return ("install the CUDA build of the pinned torch (docs/cluster.md, 'The environment on the compute "
                "nodes'), or run on CPU: --device cpu (workflow: resources.gpu: 0)")
    if driver_version() is None:
        return ("run on a node with an NVIDIA GPU and driver (SLURM: the job must get a GPU, --gpus=1), or run on "
                "CPU: --device cpu (workflow: resources.gpu: 0)")
    return (f"the driver must support CUDA {torch.version.cuda} (docs/cluster.md); if SLURM hid the GPU, check the "
            "partition and --gpus; or run on CPU: --device cpu (workflow: resources.gpu: 0)")


def require_device(requested: str | None) -> torch.device:
    """The device to run on: ``requested`` checked to be usable, or CUDA when it works and CPU otherwise (None).

    Call it before loading anything: it raises :class:`DeviceError` (one line) for a CUDA device that does not
    work here, and for an unknown spelling.
    """
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise DeviceError(f"--device {requested!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"--device {requested!r}: xtc trains on cpu or cuda; use one of them")
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except RuntimeError as err:  # a driver/runtime mismatch can raise here
        raise DeviceError(f"--device {requested}: CUDA does not initialise ({str(err).splitlines()[0][:160]}); "
                          f"{cuda_findings()}. Fix: {_cuda_fix()}") from None
    if count == 0:
        raise DeviceError(f"--device {requested}: no usable CUDA device ({cuda_findings()}). Fix: {_cuda_fix()}")
    index = device.index or 0
    if index >= count:
        raise DeviceError(f"--device {requested}: only {count} CUDA device(s) visible ({cuda_findings()}); use "
                          f"cuda:0..cuda:{count - 1}")
    return torch.device("cuda", index)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """``NVIDIA H100 80GB HBM3`` or ``cpu: <model> x<threads>``: the key of a calibration (``xtc.study.calibrate``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {cpu_name()} x{torch.get_num_threads()}"


def device_info(device: torch.device, tf32: bool = False, bf16: bool = False) -> dict[str, Any]:
    """Where a run ran: the log's first line and ``manifest.json``'s ``device_info``."""
    info: dict[str, Any] = {"device": str(device), "name": device_name(device), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
                            "tf32": bool(tf32 and device.type == "cuda"), "bf16": bool(bf16 and device.type == "cuda")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"memory_bytes": props.total_memory, "capability": f"{props.major}.{props.minor}",
                 "driver": driver_version(), "cudnn": torch.backends.cudnn.version(),
                 "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    return info


def describe(info: dict[str, Any]) -> str:
    """One log line of :func:`device_info`."""
    memory = f", {info['memory_bytes'] / 2**30:.1f} GiB" if "memory_bytes" in info else ""
    cuda = f", CUDA {info['cuda']}, driver {info.get('driver')}" if info["device"].startswith("cuda") else ""
    return (f"device {info['device']} ({info['name']}{memory}); torch {info['torch']}{cuda}; "
            f"{info['threads']} threads; tf32 {'on' if info['tf32'] else 'off'}, bf16 {'on' if info['bf16'] else 'off'}")
