"""Process-level speed settings."""

from __future__ import annotations

import platform

import pytest
import torch

from src.runtime import cpu_has_native_bf16, fast_precision, keep_large_allocations, pad_multiple


@pytest.mark.parametrize(("cuda", "bf16_gpu", "bf16_cpu", "precision", "multiple"), [
    (False, False, True, "bf16-mixed", 1), (False, False, False, "32-true", 1),
    (True, True, False, "bf16-mixed", 8), (True, False, True, "32-true", 8)])
def test_precision_and_padding_follow_the_hardware(monkeypatch, cuda, bf16_gpu, bf16_cpu, precision, multiple):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_gpu)
    monkeypatch.setattr("src.runtime.cpu_has_native_bf16", lambda: bf16_cpu)
    assert fast_precision() == precision and pad_multiple() == multiple


@pytest.mark.parametrize(("variable", "cap", "native"), [
    ("ONEDNN_MAX_CPU_ISA", "AVX2", False), ("ONEDNN_MAX_CPU_ISA", "avx512_core_vnni", False),
    ("DNNL_MAX_CPU_ISA", "AVX2", False), ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", None), (None, None, None)])
def test_a_onednn_cap_below_bf16_means_no_native_bf16(monkeypatch, variable, cap, native):
    """The CPU probes still say bf16 under the cap, but oneDNN emulates it; None: whatever the CPU reports."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if variable:
        monkeypatch.setenv(variable, cap)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # a bf16 CPU, whatever runs the test
    assert cpu_has_native_bf16() is (True if native is None else native)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert cpu_has_native_bf16() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning applies to glibc only")
def test_allocator_tuning_applies_on_glibc():
    assert keep_large_allocations() is True
