"""Ray Data settings for our pipelines: a few coarse tasks per symbol, not many small blocks."""

from __future__ import annotations


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
