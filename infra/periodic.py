"""Running one pass of background work every so often, surviving a failed pass: the schedulers' shared loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from projections.views_db import ProjectionRebuilding

log = logging.getLogger(__name__)


async def repeat(one_pass: Callable[[], Awaitable[object]], interval: float, what: str) -> None:
    """``one_pass()`` now and then every ``interval`` seconds, for ever; a failed pass is logged and retried."""
    while True:
        try:
            await one_pass()
        except asyncio.CancelledError:
            raise
        except ProjectionRebuilding as exc:  # the read model it reads has no answer yet: the next pass will
            log.info("%s pass skipped: %s", what, exc)
        except Exception:
            log.exception("%s pass failed; will retry", what)
        await asyncio.sleep(interval)
