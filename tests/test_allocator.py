"""Evaluation keeps freed memory in the process (scaling/allocator.py)."""

import ctypes
import ctypes.util
import sys

import pytest
import torch

from scaling.allocator import keep_freed_memory


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return libc if hasattr(libc, "mallinfo2") else None


@pytest.mark.skipif(_glibc() is None, reason="needs glibc >= 2.33 (mallinfo2)")
def test_freed_tensor_memory_stays_in_the_heap():
    libc = _glibc()
    libc.mallinfo2.restype = _Mallinfo2
    assert keep_freed_memory()
    size = 24 << 20  # above glibc's default mmap threshold, below the one set
    x = torch.empty(size // 4).fill_(1.0)
    assert libc.mallinfo2().hblkhd < size  # not an mmapped block of its own
    del x
    assert libc.mallinfo2().fordblks >= size  # freed into the heap, kept for reuse
