"""Decode untrusted images in worker processes with hard limits, so that no file can take the
server's (or the CLI's) memory or time (issue 23).

A `DecodePool` keeps a few worker processes (`kulit.serving.decode_worker`), each under an
address-space limit (RLIMIT_AS) and a CPU-time budget per decode (RLIMIT_CPU); the caller
waits at most `deadline_s` of wall clock and then kills the worker. A worker that was killed,
crashed, ran out of memory or kept memory after a decode is replaced by a fresh one, started in
the background. The worker decodes and reduces the photo to what the model needs (the
input_size square as uint8, ~150 KB, and the quality measures) and sends only that back: the
model stays in the calling process, which never holds a decoded photo.

The server, `kulit predict` and `kulit explain` share it; `reduce_for_model` is also what runs
in-process when no pool is given (training tools, tests), so both paths give the same pixels.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from kulit.errors import ImageError, KulitError
from kulit.serving.preprocess import Preprocessing, open_for_model, resize_crop
from kulit.serving.quality import Quality, QualityLimits, check_quality

DecodeSource = str | Path | bytes | BinaryIO
DECODE_TIMEOUT_MESSAGE = "the image takes too long to decode (limit {s:g} s)"
CRASH_MESSAGE = "the image could not be decoded (the decoder stopped on it)"


@dataclass(frozen=True)
class SandboxLimits:
    """The hard limits of every decode worker (Settings.sandbox_limits() maps the server's)."""

    memory_mb: int = 512  # RLIMIT_AS of a worker: a decode needing more gets 413 decode_memory
    cpu_s: int = 2  # CPU seconds per decode (RLIMIT_CPU counts whole seconds); SIGXCPU ends it
    deadline_s: float = 2.0  # wall clock per decode; past it the worker is killed
    keep_mb: int = 16  # a worker holding more than this over its warm size is replaced
    start_timeout_s: float = 60.0  # how long a caller waits for a worker to be ready


@dataclass
class ModelInput:
    """What a worker sends back for one photo: the model's square crop and the photo's
    quality measures (taken on the decoded photo, before the crop)."""

    pixels: np.ndarray  # [S, S, 3] uint8, the crop the model sees (before normalising)
    quality: Quality

    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels, "RGB")


def reduce_for_model(source: DecodeSource | Image.Image, pre: Preprocessing,
                     limits: QualityLimits) -> ModelInput:
    """Decode as the model's preprocessing says (JPEG draft, reduce before converting), crop,
    measure quality; or ImageError. Runs inside a worker, or in-process without a pool."""
    img = open_for_model(source, pre)
    crop = resize_crop(img, pre)
    quality = check_quality(img, limits, square=crop)
    return ModelInput(np.ascontiguousarray(np.asarray(crop, dtype=np.uint8)), quality)


def _portable(source: DecodeSource) -> str | bytes:
    """What goes down the pipe: a path as text (the worker opens it), anything else as bytes."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, bytes):
        return source
    return source.read()


def _name(source: DecodeSource) -> str:
    return str(source) if isinstance(source, (str, Path)) else "upload"


class _Worker:
    """One worker process (`python -m kulit.serving.decode_worker`) and the parent's end of its
    socket pair. A plain subprocess, not multiprocessing's spawn, which would re-run the
    parent's main script (a server, pytest, a benchmark) in every worker."""

    def __init__(self, limits: SandboxLimits) -> None:
        mine, theirs = socket.socketpair()
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kulit.serving.decode_worker", str(theirs.fileno()),
                 str(limits.memory_mb), str(limits.cpu_s), str(limits.keep_mb)],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env,
                close_fds=True)
        finally:
            theirs.close()
        self.conn = Connection(mine.detach())
        self.warm_rss = 0

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def wait_ready(self, timeout: float) -> bool:
        try:
            if not self.conn.poll(timeout):
                return False
            msg = self.conn.recv()
        except (EOFError, OSError):
            return False
        self.warm_rss = int(msg[2]) if msg and msg[0] == "ready" else 0
        return bool(msg and msg[0] == "ready")

    def exitcode(self, wait: float = 1.0) -> int | None:
        try:
            return self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.exitcode(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.exitcode(2)
        self.kill()


class DecodePool:
    """`n` decode workers; `run` hands one job to an idle worker and waits for it.

    Thread-safe: callers block until a worker is idle, so the pool size is also the number of
    decodes at once (and so bounds their memory: at most n x memory_mb).
    """

    def __init__(self, workers: int = 2, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self.size = max(1, workers)
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()
        self._closed = False
        self.replaced = 0  # workers killed or retired and started again
        self.start_error: str | None = None
        for _ in range(self.size):
            self._start_in_background()

    # -- workers ------------------------------------------------------------------------------
    def _start_in_background(self) -> None:
        threading.Thread(target=self._start_one, name="kulit-decode-start", daemon=True).start()

    def _start_one(self) -> None:
        for _ in range(3):
            if self._closed:
                return
            w = _Worker(self.limits)
            if w.wait_ready(self.limits.start_timeout_s):
                with self._lock:
                    if self._closed:
                        w.stop()
                        return
                    self._workers.add(w)
                self._idle.put(w)
                return
            w.kill()
            self.start_error = f"a decode worker exited at start (exit code {w.exitcode()})"

    def _replace(self, w: _Worker) -> None:
        with self._lock:
            self._workers.discard(w)
            self.replaced += 1
        threading.Thread(target=w.kill, daemon=True).start()
        self._start_in_background()

    def pids(self) -> list[int]:
        """The worker processes now (for memory measurements)."""
        with self._lock:
            return [w.pid for w in self._workers]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
        for w in workers:
            w.stop()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ---------------------------------------------------------------------------------
    def run(self, kind: str, name: str, *args: Any) -> Any:
        """Run job `kind` in a worker; its ImageError/KulitError is raised here as it was raised
        there. `name` (a path or "upload") starts the messages the pool writes itself."""
        for attempt in range(2):
            if self._closed:
                raise RuntimeError("the decode pool is closed")
            try:
                w = self._idle.get(timeout=self.limits.start_timeout_s)
            except queue.Empty:
                raise KulitError("no decode worker is available"
                                 + (f": {self.start_error}" if self.start_error else ""),
                                 "decode_unavailable") from None
            try:
                w.conn.send((kind, args))
            except (OSError, ValueError):  # it died while idle: try once more with another
                self._replace(w)
                if attempt:
                    raise
                continue
            return self._wait(w, name)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, w: _Worker, name: str) -> Any:
        keep = False
        try:
            if not w.conn.poll(self.limits.deadline_s):
                raise ImageError(f"{name}: "
                                 + DECODE_TIMEOUT_MESSAGE.format(s=self.limits.deadline_s),
                                 "decode_timeout")
            try:
                reply, retire = w.conn.recv()
            except (EOFError, OSError):  # killed by its CPU limit, the OOM killer, or a crash
                raise self._death(w.exitcode(), name) from None
            keep = not retire
        finally:
            if keep:
                self._idle.put(w)
            else:
                self._replace(w)
        if reply[0] == "ok":
            return reply[1]
        _, code, message = reply
        raise ImageError(message, code)

    def _death(self, exitcode: int | None, name: str) -> ImageError:
        if exitcode == -signal.SIGXCPU:
            return ImageError(f"{name}: "
                              + DECODE_TIMEOUT_MESSAGE.format(s=self.limits.deadline_s),
                              "decode_timeout")
        if exitcode == -signal.SIGKILL:  # not ours (we only kill after the deadline): OOM
            return ImageError(f"{name}: the image needs more memory to decode than the limit "
                              "allows", "decode_memory")
        return ImageError(f"{name}: {CRASH_MESSAGE}", "unreadable")

    def reduce_for_model(self, source: DecodeSource, pre: Preprocessing,
                         limits: QualityLimits) -> ModelInput:
        """`reduce_for_model` in a worker."""
        result: ModelInput = self.run("model", _name(source), _portable(source), pre, limits)
        return result

    def patch(self, source: DecodeSource, at: tuple[int, int] | None) -> Any:
        """The explain walkthrough's 4x4 patch (kulit.explain.steps.load_rgb_patch) in a worker."""
        return self.run("patch", _name(source), _portable(source), at)


_shared: DecodePool | None = None
_shared_lock = threading.Lock()


def shared_pool(workers: int | None = None) -> DecodePool:
    """One pool per process for commands that do not make their own (kulit explain); its
    workers are daemons and end with the process."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = DecodePool(workers or min(2, os.cpu_count() or 1))
        return _shared
