"""Ray Data settings for our pipelines: a few coarse tasks per symbol, not many small blocks."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_heap_retained = False


def configure_data_context(progress: bool = True) -> None:
    """Tune the current Ray Data context for one-task-per-symbol pipelines.

    Our pipelines map a handful of rows (symbols) to heavy tasks that do their own I/O. Ray Data's
    per-operator resource reservation then holds half the CPUs back and runs one task at a time on
    a 2-core machine; without it both cores work. Order of results does not matter to us.
    """
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = False
    ctx.op_resource_reservation_enabled = False
    ctx.execution_options.preserve_order = False


def prepare_symbol_worker() -> None:
    """Set up the process running per-symbol tasks (idempotent; call at the start of each task).

    - numba kernels run on one thread: there is one task per CPU already.
    - glibc keeps freed memory for the next symbol instead of handing every large array back to the
      kernel (its default above 128 KiB) and faulting it in again, zeroed, a page at a time: about
      6,000 page faults and 20 ms of system time per 525,600-bar symbol (bench/labels.py). The heap
      then stays at the largest symbol's working set, a few hundred MB, for the life of the worker.
      No effect off glibc.
    """
    global _heap_retained
    import numba

    numba.set_num_threads(1)
    if _heap_retained or not sys.platform.startswith("linux"):
        return
    _heap_retained = True
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)  # glibc's maximum; our largest arrays are ~8 MB
    mallopt(_M_TRIM_THRESHOLD, 1024 * 1024 * 1024)
    mallopt(_M_TOP_PAD, 64 * 1024 * 1024)
