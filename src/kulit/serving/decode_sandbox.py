"""Decode untrusted images in worker processes with hard limits, so that no file can take the
server's (or the CLI's) memory or time.

A `DecodePool` keeps a few worker processes, forked from one warm zygote
(`kulit.serving.decode_worker`). Each worker runs under an address-space limit (RLIMIT_AS)
and a CPU-time budget per decode (RLIMIT_CPU); the caller waits at most `deadline_s` of wall
clock and then kills the worker. A killed, crashed or retired worker (one that ran out of
memory or kept memory after a decode) is replaced by a fresh fork of the zygote, in the
background and in milliseconds. The worker decodes and reduces the photo to what the model
needs (the input_size square as uint8, ~150 KB, and the quality measures) and sends only that
back: the model stays in the calling process, which never holds a decoded photo.

The server, `kulit predict` and `kulit explain` share it; `reduce_for_model` is also what runs
in-process when no pool is given (training tools, tests), so both paths give the same pixels.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
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
STOPPED_MESSAGE = ("the image could not be decoded (the decoder was stopped: a time or memory "
                   "limit, or a crash)")


@dataclass(frozen=True)
class SandboxLimits:
    """The hard limits of every decode worker (Settings.sandbox_limits() maps the server's)."""

    memory_mb: int = 512  # RLIMIT_AS of a worker: a decode needing more gets 413 decode_memory
    cpu_s: int = 2  # CPU seconds per decode (RLIMIT_CPU counts whole seconds); SIGXCPU ends it
    deadline_s: float = 1.25  # wall clock per decode; past it the worker is killed (400)
    keep_mb: int = 16  # a worker holding more than this over its size at birth is replaced
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


MAX_REPLY = 4 * 1024 * 1024  # a reply is a small JSON head and at most a crop's pixels


def encode_reply(kind: str, reply: tuple[Any, ...], retire: bool) -> bytes:
    """A worker's answer as a JSON head, a newline and raw array bytes (no pickle)."""
    head: dict[str, Any] = {"status": reply[0], "retire": retire}
    payload = b""
    if reply[0] != "ok":
        head.update(code=reply[1], message=reply[2])
    else:
        if kind == "model":
            arr = np.ascontiguousarray(reply[1].pixels, dtype=np.uint8)
            head["quality"] = asdict(reply[1].quality)
        else:  # patch: (pixels, (x, y), (w, h), name)
            patch, at, size, name = reply[1]
            arr = np.ascontiguousarray(patch, dtype=np.int64)
            head.update(at=[int(v) for v in at], size=[int(v) for v in size], name=name)
        head["shape"] = list(arr.shape)
        payload = arr.tobytes()
    return json.dumps(head).encode() + b"\n" + payload


def decode_reply(kind: str, data: bytes) -> tuple[Any, bool]:
    """(value or the ImageError to raise, retire) from `encode_reply`'s bytes; ValueError,
    KeyError or TypeError if they are not what a worker writes."""
    raw, _, payload = data.partition(b"\n")
    head = json.loads(raw)
    retire = bool(head["retire"])
    if head["status"] != "ok":
        return ImageError(str(head["message"])[:1000], str(head["code"])[:40]), retire
    shape = tuple(int(v) for v in head["shape"])
    if kind == "model":
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"a crop of shape {shape}")
        pixels = np.frombuffer(payload, np.uint8).reshape(shape).copy()
        q = head["quality"]
        issue = q["issue"]
        quality = Quality(int(q["width"]), int(q["height"]), float(q["sharpness"]),
                          float(q["brightness"]), float(q["dark_clipped"]),
                          float(q["bright_clipped"]), None if issue is None else str(issue))
        return ModelInput(pixels, quality), retire
    if shape != (4, 4, 3):
        raise ValueError(f"a patch of shape {shape}")
    patch = np.frombuffer(payload, np.int64).reshape(shape).copy()
    name = head["name"]
    return (patch, tuple(int(v) for v in head["at"]), tuple(int(v) for v in head["size"]),
            None if name is None else str(name)), retire


def _portable(source: DecodeSource) -> str | bytes:
    """What goes down the pipe: a path as text (the worker opens it), anything else as bytes."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, bytes):
        return source
    return source.read()


def _name(source: DecodeSource) -> str:
    return str(source) if isinstance(source, (str, Path)) else "upload"


class _Zygote:
    """The warm process the workers are forked from, and the control socket to it."""

    def __init__(self, limits: SandboxLimits) -> None:
        self.ctl, theirs = socket.socketpair()
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        try:  # a plain subprocess: multiprocessing's spawn would re-run the caller's script
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kulit.serving.decode_worker", str(theirs.fileno()),
                 str(limits.memory_mb), str(limits.cpu_s), str(limits.keep_mb)],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        finally:
            theirs.close()
        self.timeout = limits.start_timeout_s
        self.ctl.settimeout(limits.start_timeout_s)
        try:
            self.ready = self.ctl.recv(1) == b"R"
        except OSError:
            self.ready = False

    def fork(self) -> _Worker:
        """A fresh worker; OSError if the zygote is gone."""
        self.ctl.sendall(b"S")
        msg, fds, _, _ = socket.recv_fds(self.ctl, 4, 1)
        if len(msg) != 4 or len(fds) != 1:
            raise OSError("the decode zygote did not hand over a worker")
        worker = _Worker(struct.unpack("i", msg)[0], Connection(fds[0]))
        try:  # it warms up first (its first decode would otherwise run against the deadline)
            if worker.conn.poll(self.timeout) and worker.conn.recv_bytes(16) == b"ready":
                return worker
        except (EOFError, OSError):
            pass
        worker.kill()
        raise OSError("a decode worker did not come up")

    def close(self) -> None:
        self.ctl.close()  # it sees EOF and exits
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class _Worker:
    """One worker (a child of the zygote) and the pool's end of its socket."""

    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid = pid
        self.conn = conn

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)  # the zygote reaps it
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
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
        self._zygote: _Zygote | None = None
        self._zygote_lock = threading.Lock()
        for _ in range(self.size):
            self._start_in_background()

    # -- workers ------------------------------------------------------------------------------
    def _start_in_background(self) -> None:
        threading.Thread(target=self._start_one, name="kulit-decode-start", daemon=True).start()

    def _start_one(self) -> None:
        for _ in range(3):
            if self._closed:
                return
            try:
                with self._zygote_lock:
                    if self._zygote is None or self._zygote.proc.poll() is not None:
                        zygote = _Zygote(self.limits)
                        if not zygote.ready:
                            zygote.close()
                            self.start_error = ("the decode zygote exited at start (exit code "
                                                f"{zygote.proc.poll()})")
                            continue
                        self._zygote = zygote
                    w = self._zygote.fork()
            except Exception as e:  # noqa: BLE001 - said to every caller that waits for one
                self.start_error = f"cannot start a decode worker ({type(e).__name__}: {e})"
                continue
            with self._lock:
                if self._closed:
                    w.stop()
                    return
                self._workers.add(w)
            self._idle.put(w)
            return

    def _replace(self, w: _Worker) -> None:
        with self._lock:
            self._workers.discard(w)
            self.replaced += 1
        threading.Thread(target=w.kill, daemon=True).start()
        self._start_in_background()

    def pids(self) -> list[int]:
        """The zygote and worker processes now (for memory measurements)."""
        with self._lock:
            workers = [w.pid for w in self._workers]
        zygote = self._zygote
        return ([zygote.proc.pid] if zygote is not None else []) + workers

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
        for w in workers:
            w.stop()
        with self._zygote_lock:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None

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
            return self._wait(w, kind, name)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, w: _Worker, kind: str, name: str) -> Any:
        keep = False
        try:
            if not w.conn.poll(self.limits.deadline_s):
                raise ImageError(f"{name}: " + DECODE_TIMEOUT_MESSAGE.format(
                    s=self.limits.deadline_s), "decode_timeout")
            try:
                data = w.conn.recv_bytes(MAX_REPLY)
            except (EOFError, OSError):  # its CPU limit (SIGXCPU), the OOM killer, a crash
                raise ImageError(f"{name}: {STOPPED_MESSAGE}", "unreadable") from None
            try:
                value, retire = decode_reply(kind, data)
            except (ValueError, KeyError, TypeError):  # not what a worker writes: drop it
                raise ImageError(f"{name}: {STOPPED_MESSAGE}", "unreadable") from None
            keep = not retire
        finally:
            if keep:
                self._idle.put(w)
            else:
                self._replace(w)
        if isinstance(value, ImageError):
            raise value
        return value

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
