"""Peak FLOP/s of the accelerator, the denominator of model FLOPs utilisation (MFU)."""

import time

import torch

#: Dense bf16 tensor-core peaks (FLOP/s) from vendor datasheets, matched against the CUDA device
#: name, most specific first. Sparse figures are half as useful and are not used.
GPU_BF16_PEAK_FLOPS: dict[str, float] = {
    "H200": 989.4e12,
    "H100 PCIe": 756.0e12,
    "H100": 989.4e12,  # SXM and NVL report 989 TFLOP/s dense bf16
    "B200": 2250.0e12,
    "A100": 312.0e12,
    "L40S": 362.0e12,
    "L4": 121.0e12,
    "RTX 4090": 165.2e12,
}


def gpu_peak_flops(device_name: str) -> float | None:
    """Look up the dense bf16 peak of a CUDA device by name; ``None`` if it is not in the table."""
    for key, flops in GPU_BF16_PEAK_FLOPS.items():
        if key in device_name:
            return flops
    return None


def measure_matmul_flops(size: int = 1024, seconds: float = 0.5) -> float:
    """Measure achievable float32 matmul FLOP/s on the CPU with a short probe.

    CPUs have no published "tensor-core peak", so MFU on CPU is relative to what a large square
    matmul achieves on this machine, measured once at the start of training.

    Args:
        size: Side of the square matrices.
        seconds: Approximate probe duration.
    """
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    a @ b  # warm-up: thread pool start and allocation
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or runs == 0:
        a @ b
        runs += 1
    return 2 * size**3 * runs / elapsed


def peak_flops(device: torch.device, override: float | None = None) -> float | None:
    """The per-device peak FLOP/s that MFU divides by.

    Args:
        device: The device training runs on.
        override: A configured peak; wins over the table and the probe.

    Returns:
        The configured peak; on CUDA the table's dense bf16 peak (``None`` for an unknown GPU);
        on CPU a measured matmul throughput.
    """
    if override is not None:
        return override
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device))
    if device.type == "cpu":
        return measure_matmul_flops()
    return None
