"""Starting Ray for a command: the cluster when configured, else a local Ray sized by the settings."""

from __future__ import annotations

from pipelines.raydata import configure_data_context
from raytrade.settings import Settings


def start_ray(settings: Settings, *, progress: bool = True) -> None:
    """Connect to ``settings.ray_address`` or start local Ray (no dashboard, small object store)."""
    import ray

    if ray.is_initialized():
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False, logging_level="WARNING")
    else:
        ray.init(
            num_cpus=settings.ray_num_cpus,
            object_store_memory=settings.ray_object_store_mb * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
        )
    configure_data_context(progress)
