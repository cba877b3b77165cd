"""Process-level speed settings: numeric precision and the CPU memory allocator."""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


# oneDNN ISAs (its ONEDNN_MAX_CPU_ISA values) below AVX512_CORE_BF16: capped to one of these, oneDNN emulates bf16
ONEDNN_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run ~4x faster than fp32 (measured on this project's 2-core CPU). Not where
    ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below AVX512_CORE_BF16: the CPU still reports bf16, but oneDNN then emulates
    it, ~1000x slower than fp32 (0.3 against 311 GFLOP/s on a 2048^3 matmul, AMX CPU capped to AVX2)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    if cap in ONEDNN_WITHOUT_BF16:
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def cpu_int8() -> dict[str, Any]:
    """What decides how int8 matmuls score on this CPU: its architecture and, on x86, VNNI (AVX512-VNNI or AVX-VNNI),
    whose int8 dot products add up in int32. x86 CPUs without it (AVX2, early AVX-512) sum u8 x s8 pairs into
    saturating int16 first, so an int8 model can score differently there (ONNX Runtime's quantization notes)."""
    machine = platform.machine().lower()
    vnni = None
    if machine in ("x86_64", "amd64", "i386", "i686"):
        probe = getattr(torch.cpu, "_is_vnni_supported", None)  # AVX512-VNNI (a private torch probe)
        vnni = bool(probe and probe())
        if not vnni and Path("/proc/cpuinfo").is_file():
            flags = Path("/proc/cpuinfo").read_text().split()
            vnni = "avx_vnni" in flags or "avx512_vnni" in flags
    return {"machine": machine, "vnni": vnni}


def fast_precision() -> str:
    """``bf16-mixed`` on bf16-capable GPUs (Ampere and newer) and CPUs; ``32-true`` elsewhere."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def allow_tf32() -> None:
    """TF32 tensor cores for the fp32 matmuls and convolutions left on CUDA (all of them under
    ``precision=32-true``; ~8x an fp32 matmul on Ampere+, with a 10-bit mantissa, which fine-tuning tolerates).
    CPU numerics are left alone."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"


def pad_multiple() -> int:
    """Pad batches to a multiple of 8 on GPUs (tensor-core tiles); on CPUs padding is pure extra work."""
    return 8 if torch.cuda.is_available() else 1


def keep_large_allocations() -> bool:
    """Stop glibc from returning every large block to the OS.

    glibc serves blocks over 32 MB with a fresh mmap and unmaps them on free, so tensors of that size made
    every step (MiniLM's 47 MB word-embedding gradient) page-fault in anew each time: 63 ms of a 216 ms CPU
    training step. Raising the mmap and trim thresholds keeps them on the heap for reuse (what tcmalloc or
    jemalloc would do): 216 -> 139 ms a step. No-op off glibc. Returns whether it applied.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold, one_gib = -1, -3, 1 << 30
    return bool(libc.mallopt(m_mmap_threshold, one_gib) and libc.mallopt(m_trim_threshold, one_gib))


def autocast_for(device: torch.device, precision: str):
    """An autocast context matching a Lightning precision string (``bf16-mixed``, ``16-mixed``, ``32-true``)."""
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()
