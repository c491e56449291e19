"""Ctrl-C (SIGINT) and SIGTERM during a file write. Python runs signal handlers between any two
bytecodes of the main thread, so a KeyboardInterrupt can land between the creation of a write's
temporary file and the ``try`` that removes it, a SIGTERM with its default action ends the
process mid-write, and an exception a handler raises inside a finaliser (``ZipFile.__del__`` in
``np.savez``) is printed as "Exception ignored" and lost. :class:`WriteGuard` gives
:func:`~metacore.train.checkpoint.write_atomic` the discipline it needs, for the write's
duration:

- a signal whose action is to end the process (SIG_DFL) raises :class:`Dying` instead, so the
  write removes its temporary file; when the write is over the process dies of that signal;
- a signal whose Python handler raised (KeyboardInterrupt for Ctrl-C) and whose exception did not
  come out of the write (swallowed on the way) is delivered to that handler once more when the
  write is over — a Ctrl-C is never lost;
- between :meth:`WriteGuard.hold` and :meth:`WriteGuard.release`, signals wait, and are then
  delivered to the handlers they would have met, SIGTERM first.

Every exception a handler raises during the write is recorded (by ``_watch`` or ``_dying``), so
an exception dropped on the way (two signals at once, a finaliser) is not a signal lost.

In other threads Python runs no handlers, and the guard does nothing.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["Dying", "WriteGuard", "interrupt_behind", "set_handler"]

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), signal.SIGINT) if s is not None)


class Dying(SystemExit):
    """A signal that ends the process arrived during a write: raised so that the write cleans
    up first (should one escape, the interpreter exits as a shell reports the signal)."""


class WriteGuard:
    """One write's signal discipline; a context manager (see the module docstring)."""

    def __init__(self):
        self.active = threading.current_thread() is threading.main_thread()
        self.original = {}     # signal -> its handler before the write
        self.fatal = None      # the first signal that ends the process, once it came
        self.raised = []       # (signal, exception) a handler raised during the write
        self.held = {}         # signal -> the handler a held signal is delivered to
        self.caught = []

    # --- the whole write ------------------------------------------------------------------
    def __enter__(self):
        if self.active:
            try:
                for s in SIGNALS:
                    handler = signal.getsignal(s)
                    if handler is signal.SIG_DFL:
                        self.original[s] = handler
                        signal.signal(s, self._dying)
                    elif callable(handler):
                        self.original[s] = handler
                        signal.signal(s, self._watch)
            except BaseException as exc:
                self.finish(exc)    # put back; a fatal signal that came ends the process
                raise
        return self

    def _dying(self, signum, frame):
        if self.fatal is None:
            self.fatal = signum
        raise Dying(128 + signum)

    def _watch(self, signum, frame):
        try:
            self.original[signum](signum, frame)
        except BaseException as exc:
            self.raised.append((signum, exc))
            raise

    def __exit__(self, exc_type, exc, tb):
        self.finish(exc)
        return False

    def finish(self, exc=None):
        """Puts the handlers back, then ends the process if a fatal signal came, or delivers
        again a signal whose exception is not ``exc`` (the one leaving the write) nor behind
        it. A Dying that escapes the ``with`` (raised as __exit__ is entered, before it runs)
        must be caught by the caller, which calls this again."""
        mine = (self._dying, self._watch)
        pending = None  # putting a handler back runs a pending signal's (signal.signal does)
        while True:
            try:
                for s, handler in self.original.items():
                    if signal.getsignal(s) in mine:
                        set_handler(s, handler)
                break
            except BaseException as raised:  # noqa: BLE001 - raised after the loop
                pending = pending or raised
        if self.fatal is not None:      # the write is over, cleaned up: die as signalled
            signal.raise_signal(self.fatal)
        if pending is not None and not isinstance(pending, Dying):
            raise pending
        leaving = _chain(exc)
        for s, raised in self.raised:
            if not any(raised is e for e in leaving):   # swallowed during the write
                self.raised = []
                self.original[s](s, None)
                return

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
            try:
                self.release()      # put back, and deliver what was noted meanwhile
            except BaseException:   # noqa: BLE001 - recorded by _watch/_dying: see finish
                pass
            raise

    def _note(self, signum, frame):
        self.caught.append(signum)

    def _restore_held(self):
        """Puts the held handlers back; returns (them, the first exception a pending signal's
        handler raised meanwhile — signal.signal runs them — or None)."""
        held, self.held = self.held, {}
        first = None
        while True:
            try:
                for s, previous in held.items():
                    if signal.getsignal(s) == self._note:
                        signal.signal(s, previous)
                return held, first
            except BaseException as raised:  # noqa: BLE001 - raised by the caller
                first = first or raised

    def release(self):
        """Puts the handlers back and delivers what came meanwhile, SIGTERM first; the first
        exception a handler raises is raised once all were delivered."""
        held, first = self._restore_held()
        caught, self.caught = self.caught, []
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


def set_handler(s, handler):
    """signal.signal(s, handler), with s blocked in this thread while it runs when the handler
    is SIG_DFL: a signal that CPython's C handler records after signal.signal checked for pending
    ones, but before the new handler is set, would otherwise find no Python handler to run and
    be dropped ("Signal 15 ignored due to race condition"); blocked, it waits and then meets the
    default action. (A signal another thread receives in that moment can still be dropped.)"""
    if handler is not signal.SIG_DFL or not hasattr(signal, "pthread_sigmask"):
        signal.signal(s, handler)
        return
    # Each call below may run a pending signal's handler once its change is made (and raise):
    # whatever raises, the mask ends as it began.
    mask = None
    try:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {s})
        signal.signal(s, handler)
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        else:   # the block was made, and then a handler raised: s was unblocked (it came)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {s})


def _chain(exc):
    """``exc`` and the exceptions it was raised while handling."""
    out = []
    while exc is not None:
        out.append(exc)
        exc = exc.__context__
    return out


def interrupt_behind(exc):
    """The KeyboardInterrupt or :class:`Dying` that ``exc`` was raised while handling, else
    ``exc``: a writer interrupted half-way may fail again while cleaning up (zipfile refuses to
    close an archive with an entry open), and that second error would hide the signal."""
    for seen in _chain(exc):
        if isinstance(seen, (KeyboardInterrupt, Dying)):
            return seen
    return exc
