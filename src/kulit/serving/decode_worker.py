"""The decode processes: a warm zygote, and the workers it forks.

`python -m kulit.serving.decode_worker FD MEMORY_MB CPU_S KEEP_MB` starts the zygote. It
imports numpy, Pillow and the codecs once (and decodes a tiny picture of each format, so their
libraries are loaded), then forks a worker whenever the pool asks, handing the pool the
worker's end of a fresh socket pair. Forking the warm zygote is quick; starting a fresh
Python and its codecs is not, and that is what a killed decode would otherwise cost every
request behind it.

A worker sets its own hard limits (address space, no core file; a CPU-time budget per job),
then decodes jobs one at a time: a name from `_jobs()` and its arguments; the answer is
(("ok", value) | ("err", code, message), retire). After each job it hands freed heap back to
the system; if it still holds more than `keep_mb` over its size at birth, or a decode ran out
of memory, it says `retire` and exits, and the pool asks the zygote for a fresh one. A decode
of more than BIG_DECODE_PIXELS waits for the one big-decode slot the workers share (`BigSlot`,
a lock the kernel frees if its holder is killed), so two big decodes never add up in memory.

Only the standard library is imported at the top, so the limits and the one-thread BLAS
setting are in place before numpy loads.
"""

from __future__ import annotations

import fcntl
import gc
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

MB = 1024 * 1024


def _set_limits(memory_mb: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a killed decode leaves no core file
    if memory_mb > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = memory_mb * MB if hard == resource.RLIM_INFINITY else min(memory_mb * MB, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _cpu_budget(seconds: int) -> None:
    """Soft RLIMIT_CPU at the CPU time used so far + `seconds` (SIGXCPU ends the worker); the
    hard limit stays where it was, so the next job can have its own budget."""
    import resource

    if seconds <= 0:
        return
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(used.ru_utime + used.ru_stime) + 1 + seconds
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process, from /proc (0 where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _trim() -> None:
    """Hand freed heap pages back to the system (glibc), so RSS shows what is really kept."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _jobs() -> dict[str, Callable[..., Any]]:
    from kulit.explain.steps import load_rgb_patch
    from kulit.serving.decode_sandbox import reduce_for_model

    return {"model": reduce_for_model, "patch": load_rgb_patch}


def _samples() -> list[bytes]:
    """One tiny picture in each accepted format (encoded once, in the zygote: an encoder such
    as HEIF's x265 needs far more memory than a worker's limit allows)."""
    import io

    from PIL import Image

    from kulit.serving.preprocess import ACCEPTED_FORMATS

    out = []
    for fmt in ACCEPTED_FORMATS:
        buf = io.BytesIO()
        try:
            Image.new("RGB", (16, 16), (120, 80, 60)).save(buf, fmt)
        except Exception:  # noqa: BLE001 - a missing encoder only leaves that codec cold
            continue
        out.append(buf.getvalue())
    return out


def _warm_up(samples: list[bytes]) -> None:
    """Decode the samples, so the codecs' libraries and pages are loaded before real work."""
    from kulit.serving.preprocess import decode_image

    for data in samples:
        try:
            decode_image(data)
        except Exception:  # noqa: BLE001 - a codec that fails here fails on the real file too
            continue


def name_of(args: tuple[Any, ...]) -> str:
    """How messages name the file: its path, or "upload" for bytes."""
    return args[0] if args and isinstance(args[0], str) else "upload"


def _is_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, MemoryError) or "memory" in text or "cannot allocate" in text


class BigSlot:
    """The one big-decode slot the workers share: a POSIX record lock on a file the zygote
    opened before forking them. The lock belongs to the process, so siblings exclude each
    other, and the kernel frees it when a holder exits or is killed (no stale lock)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.held = False

    def take(self) -> None:
        if not self.held:
            fcntl.lockf(self.fd, fcntl.LOCK_EX, 0, 0, os.SEEK_SET)  # waits for a sibling
            self.held = True

    def release(self) -> None:
        if self.held:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 0, 0, os.SEEK_SET)
            self.held = False


def slot_file() -> int:
    """A file to lock, unlinked at once (only the zygote and its workers hold it)."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="kulit-decode-slot-")
    os.unlink(path)
    return fd


def run_worker(conn: Connection, memory_mb: int, cpu_s: int, keep_mb: int,
               jobs: dict[str, Callable[..., Any]], samples: list[bytes],
               slot: BigSlot | None = None) -> None:
    """A worker's loop, in the forked child: limits, then one job at a time. A job whose
    decode is big holds `slot` until it ends, so one big decode runs at a time."""
    from kulit.errors import KulitError
    from kulit.serving.decode_guards import set_big_decode_slot
    from kulit.serving.decode_sandbox import encode_reply
    from kulit.serving.preprocess import DECODE_MEMORY_MESSAGE

    _set_limits(memory_mb)
    set_big_decode_slot(slot.take if slot is not None else None)
    _warm_up(samples)  # touch the codecs' pages here, so the first real job is not slow
    _trim()
    born = rss_bytes()
    conn.send_bytes(b"ready")
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        kind, args = job
        _cpu_budget(cpu_s)
        failed = out_of_memory = False
        reply: tuple[Any, ...]
        try:
            reply = ("ok", jobs[kind](*args))
        except KulitError as e:
            failed = True
            reply = ("err", e.code, e.message)
        except Exception as e:  # noqa: BLE001 - whatever a codec raises is the file's fault
            failed = True
            out_of_memory = _is_memory(e)
            reply = ("err", "decode_memory" if out_of_memory else "unreadable",
                     f"{name_of(args)}: " + (DECODE_MEMORY_MESSAGE if out_of_memory else
                                             f"unreadable image ({str(e)[:120]})"))
        if failed:  # an exception's traceback holds the decoded frames: free them now
            gc.collect()
        _trim()
        if slot is not None:
            slot.release()
        retire = out_of_memory or rss_bytes() > born + keep_mb * MB
        try:
            conn.send_bytes(encode_reply(kind, reply, retire))
        except (OSError, ValueError):
            return
        if retire:
            return


def zygote(ctl: socket.socket, memory_mb: int, cpu_s: int, keep_mb: int) -> None:
    """Warm up, then fork a worker for each b"S" on `ctl`; send back its pid and socket."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    jobs = _jobs()
    samples = _samples()
    slot_fd = slot_file()
    _warm_up(samples)
    gc.collect()
    gc.freeze()  # the workers share these pages instead of copying them when gc runs
    ctl.sendall(b"R")
    while True:
        try:
            cmd = ctl.recv(1)
        except OSError:
            return
        if cmd != b"S":
            return
        mine, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker (coverage does not follow os._exit)
            code = 0
            try:
                ctl.close()
                mine.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                run_worker(Connection(theirs.detach()), memory_mb, cpu_s, keep_mb, jobs,
                           samples, BigSlot(slot_fd))
            except BaseException:  # noqa: BLE001 - a worker never returns into the zygote
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        try:
            socket.send_fds(ctl, [struct.pack("i", pid)], [mine.fileno()])
        except OSError:
            return
        finally:
            mine.close()


def main(argv: list[str]) -> int:
    """`python -m kulit.serving.decode_worker FD MEMORY_MB CPU_S KEEP_MB` (the pool runs it)."""
    if len(argv) != 4 or not all(a.isdigit() for a in argv):
        print("kulit.serving.decode_worker is started by kulit.serving.decode_sandbox",
              file=sys.stderr)
        return 2
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # each BLAS thread would reserve its own buffers
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is for the parent, which closes us
    fd, memory_mb, cpu_s, keep_mb = (int(a) for a in argv)
    zygote(socket.socket(fileno=fd), memory_mb, cpu_s, keep_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
