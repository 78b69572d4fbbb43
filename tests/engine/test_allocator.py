import platform
import sys

from engine.allocator import keep_frame_buffers_in_heap


def test_malloc_thresholds_are_raised_on_glibc_and_left_alone_elsewhere():
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_frame_buffers_in_heap() is on_glibc
    assert keep_frame_buffers_in_heap() is on_glibc  # idempotent: set once per process
