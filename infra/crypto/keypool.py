"""RSA keys generated ahead of need, so a server-side RSA issuance does not wait for a prime search.

An RSA-4096 key takes from 0.1 s to over 2 s to generate (the search for two random primes), and
that spread, not signing, is what an issuance with a server-side RSA key waits for. The pool keeps
a few keys of each size ready, made by one background thread that uses an otherwise idle core;
each key is handed out once and never kept afterwards. A size is kept ready only once it has
been asked for (a service that issues no RSA never generates a key ahead), and only in a process
that armed the pool (`csm serve`). When the pool is empty (the first request of a size, a burst)
the caller generates its own key exactly as before.

The keys are private keys in this process's memory and nowhere else: never written to disk, never
logged, dropped when the pool stops. They are the same kind of exposure as a key being generated
for a request, for a little longer.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque

from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger(__name__)


class RsaKeyPool:
    """Up to ``target`` ready keys per RSA size; ``take`` never blocks."""

    def __init__(self, sizes: tuple[int, ...], target: int) -> None:
        self.target = max(0, target)
        self._ready: dict[int, deque[rsa.RSAPrivateKey]] = {bits: deque() for bits in sizes}
        self._wanted: set[int] = set()  # the sizes asked for so far: only these are kept ready
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._armed = False
        self._stopping = False

    def take(self, bits: int) -> rsa.RSAPrivateKey | None:
        """A ready key of ``bits`` (removed from the pool), or None: then generate one yourself."""
        ready = self._ready.get(bits)
        if ready is None or self.target == 0:
            return None
        with self._wake:
            self._wanted.add(bits)
            key = ready.popleft() if ready else None
            if self._armed and self._thread is None:
                self._thread = threading.Thread(target=self._refill, name="rsa-key-pool", daemon=True)
                self._thread.start()
            self._wake.notify_all()  # refill what was taken (or asked for and missing)
        return key

    def ready(self, bits: int) -> int:
        return len(self._ready.get(bits, ()))

    def wait_full(self, timeout: float) -> bool:
        """Block until every size asked for holds ``target`` keys; False if ``timeout`` passed first."""
        with self._wake:
            return self._wake.wait_for(lambda: self._full() or self._stopping, timeout) and not self._stopping

    def arm(self) -> None:
        """Allow refilling in this process: the thread starts with the first ``take``."""
        with self._wake:
            self._armed, self._stopping = True, False

    def stop(self) -> None:
        """Stop refilling and drop every ready key."""
        with self._wake:
            self._armed, self._stopping = False, True
            thread, self._thread = self._thread, None
            self._wake.notify_all()
        if thread is not None:
            thread.join()
        with self._wake:
            for ready in self._ready.values():
                ready.clear()

    def _full(self) -> bool:
        return all(len(self._ready[bits]) >= self.target for bits in self._wanted)

    def _lowest(self) -> int:
        return min(self._wanted, key=lambda bits: len(self._ready[bits]))

    def _refill(self) -> None:
        _lower_priority()
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or not self._full())
                if self._stopping:
                    return
                bits = self._lowest()
            try:
                key = rsa.generate_private_key(public_exponent=65537, key_size=bits)  # releases the GIL
            except Exception:  # never expected; the callers generate their own keys meanwhile
                log.exception("the RSA key pool could not generate a key; it stops refilling")
                return
            with self._wake:
                if self._stopping:
                    return
                self._ready[bits].append(key)
                self._wake.notify_all()


def _lower_priority() -> None:
    """Linux: nice this thread alone, so requests being answered come first (best effort elsewhere)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass
