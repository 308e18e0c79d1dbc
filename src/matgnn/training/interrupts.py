"""SIGTERM (a scheduler's kill, ``timeout``) handled like Ctrl-C while training, so both end in a
checkpoint and a resume hint; forked workers get the default handler back."""

from __future__ import annotations

import contextlib
import os
import signal
import threading


def _raise_interrupt(signum, frame):  # noqa: ANN001
    raise KeyboardInterrupt


def _default_sigterm_in_child() -> None:
    """A forked child (graph-build pool, loader workers) must die on SIGTERM as usual: a
    Python-level handler cannot run while a worker blocks in C, so ``Pool.terminate`` would hang."""
    if signal.getsignal(signal.SIGTERM) is _raise_interrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_default_sigterm_in_child)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a scheduler's kill, ``timeout``) handled like Ctrl-C while training."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


