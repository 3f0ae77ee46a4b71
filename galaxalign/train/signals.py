"""Stop training cleanly on Ctrl-C or SIGTERM: finish the step, write a checkpoint, then exit."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A context manager that turns SIGINT and SIGTERM into a request to stop after the current step.

    Inside the ``with`` block the first SIGINT or SIGTERM only sets
    :attr:`signal_number`; the trainer checks :attr:`requested` after each
    step, writes a checkpoint and calls :meth:`redeliver`, which restores the
    previous handlers and raises the signal again. So Ctrl-C still ends in
    ``KeyboardInterrupt`` and a pre-empted job still dies of SIGTERM, only
    later. A second Ctrl-C interrupts at once, without a checkpoint; further
    SIGTERMs are ignored until the checkpoint is written.

    Signal handlers can only be set in the main thread; elsewhere the block
    changes nothing and signals act as usual.
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                # A signal the program chose to ignore stays ignored.
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._restore()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if self.signal_number is None:
            self.signal_number = number
            logger.warning("received %s: stopping after this step and writing a checkpoint", name)
            return
        if number == signal.SIGINT:
            logger.warning("received SIGINT again: stopping now, without a checkpoint")
            self._restore()
            raise KeyboardInterrupt
        logger.warning("received %s again; still writing the checkpoint", name)

    def _restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def redeliver(self) -> None:
        """Restore the previous handlers and raise the stop signal again in this process."""
        self._restore()
        if self.signal_number is not None:
            signal.raise_signal(self.signal_number)
