"""Ctrl-C (SIGINT) and SIGTERM during a file write. Python runs signal handlers between any two
bytecodes of the main thread, so a KeyboardInterrupt can land between the creation of a write's
temporary file and the ``try`` that removes it, and a SIGTERM with its default action ends the
process mid-write. :class:`WriteGuard` gives :func:`~metacore.train.checkpoint.write_atomic` the
discipline it needs:

- for the whole write, a signal whose action is to end the process (SIG_DFL) raises
  :class:`Dying` instead, so the write removes its temporary file; when the write is over the
  process dies of that signal all the same, also when the exception was swallowed on the way (a
  finaliser, a bare ``except`` in a writer);
- between :meth:`WriteGuard.hold` and :meth:`WriteGuard.release`, signals wait, and are then
  delivered to the handlers they would have met, SIGTERM first.

In other threads Python runs no handlers, and the guard does nothing.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["Dying", "WriteGuard", "interrupt_behind"]

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), signal.SIGINT) if s is not None)


class Dying(SystemExit):
    """A signal that ends the process arrived during a write: raised so that the write cleans
    up first (should one escape, the interpreter exits as a shell reports the signal)."""


class WriteGuard:
    """One write's signal discipline; a context manager (see the module docstring)."""

    def __init__(self):
        self.active = threading.current_thread() is threading.main_thread()
        self.fatal = None      # the first signal that ends the process, once it came
        self.converted = []    # signals turned into Dying for the write
        self.held = {}         # signal -> the handler a held signal is delivered to
        self.caught = []

    # --- the whole write ------------------------------------------------------------------
    def __enter__(self):
        if self.active:
            try:
                for s in SIGNALS:
                    if signal.getsignal(s) is signal.SIG_DFL:
                        signal.signal(s, self._dying)
                        self.converted.append(s)
            except BaseException:
                self._restore_converted()
                raise
        return self

    def _dying(self, signum, frame):
        if self.fatal is None:
            self.fatal = signum
        raise Dying(128 + signum)

    def _restore_converted(self):
        converted, self.converted = self.converted, []
        try:
            for s in converted:
                signal.signal(s, signal.SIG_DFL)
        finally:    # a signal may land between two of them: none stays converted
            for s in converted:
                if signal.getsignal(s) == self._dying:
                    signal.signal(s, signal.SIG_DFL)

    def __exit__(self, *exc):
        self._restore_converted()
        if self.fatal is not None:      # the write is over, cleaned up: die as signalled
            signal.raise_signal(self.fatal)
        return False

    # --- a window in which signals wait -----------------------------------------------------
    def hold(self):
        if not self.active:
            return
        try:
            for s in SIGNALS:
                previous = signal.getsignal(s)
                if previous is signal.SIG_IGN or previous is None:   # None: set outside Python
                    continue
                self.held[s] = previous
                signal.signal(s, self._note)
        except BaseException:   # a handler that fired in between raised: undo, then go on
            self._restore_held()
            raise

    def _note(self, signum, frame):
        self.caught.append(signum)

    def _restore_held(self):
        held, self.held = self.held, {}
        try:
            for s, previous in held.items():
                signal.signal(s, previous)
        finally:    # a handler just put back may raise before the loop ends: no _note stays
            for s, previous in held.items():
                if signal.getsignal(s) == self._note:
                    signal.signal(s, previous)
        return held

    def release(self):
        """Puts the handlers back and delivers what came meanwhile, SIGTERM first; the first
        exception a handler raises is raised once all were delivered."""
        held = self._restore_held()
        caught, self.caught = self.caught, []
        first = None
        for s in sorted(caught, key=SIGNALS.index):     # stable: a second Ctrl-C stays one
            try:
                if held[s] is signal.SIG_DFL:
                    signal.raise_signal(s)
                else:
                    held[s](s, None)
            except BaseException as exc:  # noqa: BLE001 - every signal is delivered first
                first = first or exc
        if first is not None:
            raise first


def interrupt_behind(exc):
    """The KeyboardInterrupt or :class:`Dying` that ``exc`` was raised while handling, else
    ``exc``: a writer interrupted half-way may fail again while cleaning up (zipfile refuses to
    close an archive with an entry open), and that second error would hide the signal."""
    seen = exc
    while seen is not None:
        if isinstance(seen, (KeyboardInterrupt, Dying)):
            return seen
        seen = seen.__context__
    return exc
