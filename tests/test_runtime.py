"""Process-level speed settings."""

from __future__ import annotations

import platform

import pytest
import torch

from src.runtime import fast_precision, keep_large_allocations, pad_multiple


def test_precision_is_a_lightning_value_matching_the_hardware():
    precision = fast_precision()
    assert precision in ("bf16-mixed", "32-true")
    if not torch.cuda.is_available():
        assert pad_multiple() == 1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning applies to glibc only")
def test_allocator_tuning_applies_on_glibc():
    assert keep_large_allocations() is True
