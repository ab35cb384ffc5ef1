"""Lean worker processes for CPU-heavy jobs (PDFs, charts): ``python -m bot.workers`` children.

multiprocessing's "spawn" re-imports the parent's main module in every child, and for ``optobot run`` that
is the whole application (aiogram, SQLAlchemy, …): ~250 MB per worker to draw a PDF. :class:`WorkerPool`
starts ``python -m bot.workers`` instead, a loop that reads pickled jobs (a module-level function and its
arguments) from stdin and writes pickled results to its own pipe, so a child holds only what its jobs import.

The pool is a :class:`concurrent.futures.Executor` and works from any event loop
(``await loop.run_in_executor(pool, fn, *args)``). One thread per worker feeds its child; a worker is
started when a job finds none idle (or ahead of time by :meth:`WorkerPool.start`). Jobs run in order of submission,
those sent with :meth:`WorkerPool.submit_background` only when no other job waits. A child that dies (e.g.
killed for memory) is replaced and its job run once more; a second death fails the job with
:class:`WorkerDied`. This module imports only the standard library: it is the children's entry point.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import traceback
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import IO, Any, Callable

_HEADER = struct.Struct("!Q")
_URGENT, _BACKGROUND, _STOP = 0, 1, 2
#: The folder that holds the ``bot`` package, put first on the children's ``PYTHONPATH``.
_ROOT = str(Path(__file__).resolve().parents[1])

log = logging.getLogger(__name__)


class WorkerDied(BrokenProcessPool):
    """A worker process exited while running a job (twice in a row)."""


def _send(stream: IO[bytes], payload: Any) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    """The next pickled message, or :class:`EOFError` when the other side has gone."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    size, = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


class _Child:
    """One ``python -m bot.workers`` process and its two pipes; the initializer is sent at once."""

    def __init__(self, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (_ROOT, os.environ.get("PYTHONPATH"))))}
        self.process = subprocess.Popen([sys.executable, "-m", "bot.workers"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env)
        self._starting = initializer is not None
        if initializer is not None:
            self._write(initializer, initargs, {})

    @property
    def pid(self) -> int:
        return self.process.pid

    def _write(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            _send(self.process.stdin, (function, args, kwargs))
        except (BrokenPipeError, ValueError):  # ValueError: the pipe is closed
            raise EOFError from None

    def _read(self) -> tuple[bool, Any]:
        assert self.process.stdout is not None
        return _receive(self.process.stdout)

    def ready(self) -> None:
        """Wait for the initializer to finish (once); its failure is logged, the worker still serves."""
        if self._starting:
            self._starting = False
            ok, value = self._read()
            if not ok:
                log.error("a worker's initializer failed: %r", value)

    def call(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
        """``(True, result)`` or ``(False, exception)``; :class:`EOFError` if the child died."""
        self.ready()
        self._write(function, args, kwargs)
        return self._read()

    def stop(self, timeout: float = 10) -> None:
        """Close its stdin (it exits after the job under way), killing it if it does not exit in time."""
        with contextlib.suppress(BrokenPipeError):
            if self.process.stdin:
                self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


class WorkerPool(Executor):
    """Up to ``size`` lean worker processes; ``initializer(*initargs)`` runs in each child once it starts.

    A worker is added only when a job finds none idle, so a pool that never has two jobs at once runs one
    process; :meth:`start` starts some ahead of the first job.
    """

    def __init__(self, size: int, initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = ()) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        self.size = size
        self._initializer = initializer
        self._initargs = initargs
        self._jobs: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._idle = threading.Semaphore(0)  # one token per worker thread waiting for a job
        self._slots = [threading.RLock() for _ in range(size)]  # held while a slot's child is in use
        self._threads: list[threading.Thread] = []
        self._children: dict[int, _Child] = {}
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """The process ids of the children running now."""
        return [child.pid for child in list(self._children.values())]

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._submit(_URGENT, fn, args, kwargs)

    def submit_background(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Like :meth:`submit`, but the job waits while any job sent with :meth:`submit` is queued."""
        return self._submit(_BACKGROUND, fn, args, kwargs)

    def start(self, count: int | None = None) -> list[int]:
        """Start ``count`` (default: all) children now and wait until each has run the initializer
        (blocking); the pids of the children running."""
        count = self.size if count is None else min(count, self.size)
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            while len(self._threads) < count:
                self._add_thread()
                self._idle.release()  # it waits for a job
        for slot in range(count):
            self._child(slot)  # all start side by side
        for slot in range(count):
            with self._slots[slot], contextlib.suppress(EOFError):  # died at start: its next job starts another
                self._child(slot).ready()
        return self.pids

    def _submit(self, priority: int, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new jobs after shutdown")
            self._jobs.put((priority, next(self._order), (future, fn, args, kwargs)))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.size:
                self._add_thread()
        return future

    def _add_thread(self) -> None:
        slot = len(self._threads)
        thread = threading.Thread(target=self._serve, args=(slot,), name=f"worker-{slot}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _child(self, slot: int) -> _Child:
        """The slot's child, started if there is none."""
        with self._slots[slot]:
            child = self._children.get(slot)
            if child is None:
                child = self._children[slot] = _Child(self._initializer, self._initargs)
            return child

    def _drop(self, slot: int) -> None:
        child = self._children.pop(slot, None)
        if child is not None:
            child.stop()

    def _run(self, slot: int, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
        with self._slots[slot]:
            for _ in range(2):
                try:
                    return self._child(slot).call(fn, args, kwargs)
                except EOFError:
                    self._drop(slot)
                    log.warning("a worker process died running %s; starting another", getattr(fn, "__qualname__", fn))
                except BaseException as error:  # e.g. an argument that can't be pickled
                    return False, error
        return False, WorkerDied(f"a worker process died twice running {getattr(fn, '__qualname__', fn)}")

    def _serve(self, slot: int) -> None:
        while True:
            _, _, job = self._jobs.get()
            if job is None:
                break
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                self._idle.release()
                continue
            ok, value = self._run(slot, fn, args, kwargs)
            self._idle.release()  # before the result: the caller's next job must find this worker idle
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        with self._slots[slot]:
            self._drop(slot)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking jobs; the children exit after the queued jobs (with ``cancel_futures``: after the
        ones under way)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        _, _, job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    job[0].cancel()
            for _ in self._threads:
                self._jobs.put((_STOP, next(self._order), None))
        if wait:
            for thread in self._threads:
                thread.join()


def loaded_modules() -> list[str]:
    """A job: the names of the modules a worker has imported (the tests check that it stays lean)."""
    return sorted(sys.modules)


def _serve_jobs() -> None:
    """The child's loop: read a job from stdin, run it, write ``(ok, result or exception)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent stops us
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the results pipe
    jobs = sys.stdin.buffer
    while True:
        try:
            function, args, kwargs = _receive(jobs)
        except EOFError:
            return
        try:
            reply: tuple[bool, Any] = (True, function(*args, **kwargs))
        except Exception as error:  # the job's own failure goes back to the caller
            error.add_note("in the worker process:\n" + traceback.format_exc())
            reply = (False, error)
        try:
            _send(results, reply)
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            _send(results, (False, RuntimeError(f"the worker's result can't be sent back: {error}")))


if __name__ == "__main__":
    _serve_jobs()
