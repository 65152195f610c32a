"""What the batch worker (``tune.worker``) hands a job handler (``tune.jobs_handlers``), and what a handler is.

Its own module so that the worker and the handlers each import it and neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from storage.jobs import Job


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a handler gets: the claimed job and a progress callback ``progress(fraction, message="")``."""

    job: Job
    progress: Callable[..., None]

    @property
    def config(self) -> Mapping[str, Any]:
        return self.job.config


#: What a handler returns: the URI of its report (stored as ``report_uri``), or None.
JobHandler = Callable[[JobContext], str | None]
