"""Following a registered model's ``production`` alias from a Serve deployment, shared by the
Predictor and the RL policy.

A background task polls the alias every ``poll_s``. When it moved, the new version is loaded next to
the current one (``_load_version``) and swapped in with one reference assignment, so a batch in flight
finishes on the model it started with and every answer names the version that computed it. A
version that fails to load is logged once and remembered in ``_failed``; the current one keeps
serving.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from storage.registry import PRODUCTION_ALIAS, ModelRegistry, ModelVersionInfo

log = logging.getLogger(__name__)


class AliasFollower:
    """Mixin of a deployment holding ``_current`` (with a ``version``) loaded from ``_registry``."""

    _label = "deployment"
    #: what a failed load may raise; anything else propagates to the poll loop (logged there)
    _load_errors: tuple[type[BaseException], ...] = (Exception,)
    _registry: ModelRegistry
    _name: str
    _poll_s: float
    _current: Any

    def _follow(self, registry: ModelRegistry, name: str, poll_s: float, current: Any) -> None:
        self._registry = registry
        self._name = name
        self._poll_s = poll_s
        self._current = current
        self._swaps = 0
        self._failed: set[str] = set()
        self._poller: asyncio.Task[None] | None = None

    def _load_version(self, info: ModelVersionInfo) -> Any:
        """Load ``info``'s version and check it can serve; raise one of ``_load_errors`` if not."""
        raise NotImplementedError

    def _ensure_poller(self) -> None:
        if self._poller is None and self._poll_s > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll_alias())

    async def _poll_alias(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # the current version keeps serving; the next poll tries again
                log.exception("%s: could not refresh %s@%s", self._label, self._name, PRODUCTION_ALIAS)

    def refresh(self) -> str:
        """Load the version the alias now points to if it moved; return the version serving."""
        info = self._registry.production_version(self._name)
        if info is None or str(info.version) == self._current.version:
            return str(self._current.version)
        try:
            loaded = self._load_version(info)
        except self._load_errors as e:
            if str(info.version) not in self._failed:
                log.error("%s: version %s of %s not loaded, %s keeps serving: %s",
                          self._label, info.version, self._name, self._current.version, e)  # fmt: skip
                self._failed.add(str(info.version))
            return str(self._current.version)
        self._current = loaded  # one assignment: batches in flight keep the model they started with
        self._swaps += 1
        log.info("%s: now serving %s version %s", self._label, self._name, loaded.version)
        return str(loaded.version)

    async def check_now(self) -> str:
        """Refresh immediately (tests, operators); return the version serving."""
        return await asyncio.to_thread(self.refresh)
