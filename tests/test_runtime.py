"""Process-level speed settings."""

from __future__ import annotations

import platform

import pytest
import torch

from src.runtime import fast_precision, keep_large_allocations, pad_multiple


@pytest.mark.parametrize(("cuda", "bf16_gpu", "bf16_cpu", "precision", "multiple"), [
    (False, False, True, "bf16-mixed", 1), (False, False, False, "32-true", 1),
    (True, True, False, "bf16-mixed", 8), (True, False, True, "32-true", 8)])
def test_precision_and_padding_follow_the_hardware(monkeypatch, cuda, bf16_gpu, bf16_cpu, precision, multiple):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_gpu)
    monkeypatch.setattr("src.runtime.cpu_has_native_bf16", lambda: bf16_cpu)
    assert fast_precision() == precision and pad_multiple() == multiple


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning applies to glibc only")
def test_allocator_tuning_applies_on_glibc():
    assert keep_large_allocations() is True
