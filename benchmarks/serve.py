"""Serving load test: `kulit serve` on loopback with real photos; p50/p99, throughput, memory.

    python benchmarks/serve.py [--model models/kulit-skin8] [--requests 1000] [--concurrency 1,4,16]

Starts the server as a subprocess, warms it up, then for each concurrency level sends --requests
POST /api/v1/predict uploads from that many client threads (one httpx.Client each) and records
latency, status codes, errors, the server's CPU time and its peak memory. The client runs on the
same machine as the server, so it competes with it for the CPUs.
Writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SKIN8 = REPO.parent / "shared" / "data" / "skin8"
PREDICT = "/api/v1/predict"
BOUNDARY = "kulit-bench-boundary-7f3a"
MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
TARGETS = {"p50_c1_ms_max": 25.0, "errors_c16": 0, "server_rss_mb_max": 400.0}
BUSY_MARKERS = ("kulit train", "benchmarks/accuracy.py")  # CPU-heavy neighbours worth noting


def sample_photos(n: int, seed: int) -> list[tuple[str, bytes]]:
    """A fixed seeded sample of real skin8 photos, read into memory once: (name, bytes)."""
    files = sorted(p for p in SKIN8.rglob("*") if p.suffix.lower() in MIME)
    rng = np.random.default_rng(seed)
    picked = [files[i] for i in rng.choice(len(files), size=min(n, len(files)), replace=False)]
    return [(p.name, p.read_bytes()) for p in picked]


def multipart(name: str, data: bytes) -> bytes:
    """The request body, encoded once per photo so the client spends no CPU on it per request."""
    mime = MIME[Path(name).suffix.lower()]
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: {mime}\r\n\r\n").encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """pid and every process below it (uvicorn runs one process, but reloaders/workers fork)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def proc_status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process, seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pss_kb(pid: int) -> int:
    """Proportional set size: pages shared by n processes count 1/n in each."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class MemorySampler(threading.Thread):
    """Sample the server tree's summed VmRSS every `every` s; VmHWM covers spikes in between.
    With `pss`, also the summed PSS: what the tree really holds, since RSS counts the pages the
    decode workers share with their zygote once in each of them."""

    def __init__(self, pid: int, every: float = 0.25, pss: bool = False) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.pss = pid, every, pss
        self.stop = threading.Event()
        self.peak_rss_kb = 0
        self.peak_hwm_kb = 0
        self.peak_pss_kb = 0
        self.pids = [pid]

    def sample(self) -> None:
        self.pids = descendants(self.pid)
        self.peak_rss_kb = max(self.peak_rss_kb,
                               sum(proc_status_kb(p, "VmRSS") for p in self.pids))
        self.peak_hwm_kb = max(self.peak_hwm_kb,
                               sum(proc_status_kb(p, "VmHWM") for p in self.pids))
        if self.pss:
            self.peak_pss_kb = max(self.peak_pss_kb, sum(pss_kb(p) for p in self.pids))

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.sample()

    def reset(self) -> None:
        self.peak_rss_kb = 0  # VmHWM is the kernel's lifetime peak and cannot be reset
        self.peak_pss_kb = 0


def busy_neighbours() -> list[str]:
    """Command lines of CPU-heavy kulit jobs running right now (training, accuracy benchmark)."""
    found = []
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != me:
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(m in cmd for m in BUSY_MARKERS) and "pgrep" not in cmd:
                found.append(cmd.strip())
    return found


# every load-test client comes from 127.0.0.1, so the per-address cap on uploads in flight
# (KULIT_MAX_UPLOADS_PER_CLIENT, 4) would answer 429 to the rest: lifted past the highest level
LOAD_TEST_ENV = {"KULIT_MAX_UPLOADS_PER_CLIENT": "64"}


def start_server(model: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    kulit = Path(sys.executable).with_name("kulit")
    with log.open("wb") as f:  # the child keeps its own handle; uvicorn's access log goes here
        return subprocess.Popen(
            [str(kulit), "serve", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(port)],
            stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **LOAD_TEST_ENV},
        )


def wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0
                 ) -> dict[str, Any]:
    t0 = time.monotonic()
    with httpx.Client(base_url=base, timeout=2.0) as c:
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
                print(f"error: the server exited ({proc.returncode}): {tail[0]}", file=sys.stderr)
                sys.exit(2)
            try:
                r = c.get("/healthz")
                if r.status_code == 200:
                    return {"startup_s": time.monotonic() - t0, **r.json()}
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    proc.terminate()
    sys.exit(f"error: the server did not answer /healthz within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_clients(worker: Callable[[int], None], n: int) -> float:
    """Run worker(0) ... worker(n-1) in n threads at once; the wall time until all are done."""
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def run_level(base: str, bodies: list[bytes], n: int, conc: int, server_pid: int,
              mem: MemorySampler) -> dict[str, Any]:
    """Send n requests from conc threads; each thread takes the next request index until done."""
    lat = np.full(n, np.nan)
    status: list[str] = [""] * n
    server_ms: list[dict[str, float]] = []
    nxt = iter(range(n))
    lock = threading.Lock()
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=60.0, headers=headers) as c:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                t = time.perf_counter()
                try:
                    r = c.post(PREDICT, content=bodies[i % len(bodies)])
                    lat[i] = time.perf_counter() - t
                    status[i] = str(r.status_code)
                    if r.status_code == 200:
                        server_ms.append(r.json()["timing_ms"])
                except httpx.HTTPError as e:
                    lat[i] = time.perf_counter() - t
                    status[i] = type(e).__name__

    mem.reset()
    cpu0 = sum(proc_cpu_s(p) for p in mem.pids)
    me0 = os.times()
    wall = run_clients(lambda _: worker(), conc)
    me1 = os.times()
    mem.sample()
    server_cpu = sum(proc_cpu_s(p) for p in mem.pids) - cpu0
    client_cpu = (me1.user - me0.user) + (me1.system - me0.system)
    counts = Counter(status)
    ok = lat[[s == "200" for s in status]] * 1000
    all_ms = lat * 1000
    parts = {k: float(np.median([t[k] for t in server_ms])) for k in server_ms[0]} if server_ms \
        else {}
    return {
        "concurrency": conc,
        "requests": n,
        "errors": n - counts.get("200", 0),
        "status_counts": dict(sorted(counts.items())),
        "p50_ms": float(np.percentile(all_ms, 50)),
        "p99_ms": float(np.percentile(all_ms, 99)),
        "mean_ms": float(all_ms.mean()),
        "max_ms": float(all_ms.max()),
        "ok_p50_ms": float(np.percentile(ok, 50)) if ok.size else None,
        "throughput_rps": n / wall,
        "wall_s": wall,
        # medians of the server's own timing_ms (inside the handler's threadpool call)
        "server_timing_p50_ms": parts,
        "server_cpu_ms_per_request": 1000 * server_cpu / n,
        "client_cpu_ms_per_request": 1000 * client_cpu / n,
        "server_rss_peak_mb_sampled": mem.peak_rss_kb / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "kulit-skin8")
    ap.add_argument("--requests", type=int, default=1000, help="requests per concurrency level")
    ap.add_argument("--concurrency", default="1,4,16", help="comma-separated levels")
    ap.add_argument("--photos", type=int, default=64, help="distinct photos, cycled")
    ap.add_argument("--warmup", type=int, default=20, help="sequential requests first, unmeasured")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve.json")
    args = ap.parse_args()
    model = args.model.resolve()
    if not (model / "model.onnx").is_file():
        print(f"error: {args.model}: no model.onnx (export a model first)", file=sys.stderr)
        sys.exit(2)
    if not SKIN8.is_dir():
        print(f"error: {SKIN8} not found (the benchmark uses real skin8 photos)", file=sys.stderr)
        sys.exit(2)
    try:
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1 or args.requests < 1:
        print("error: --concurrency needs positive integers like 1,4,16 and --requests >= 1",
              file=sys.stderr)
        sys.exit(2)

    photos = sample_photos(args.photos, args.seed)
    bodies = [multipart(name, data) for name, data in photos]
    busy_before = busy_neighbours()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc = start_server(model, port, log)
        try:
            health = wait_healthy(base, proc, log)
            mem = MemorySampler(proc.pid)
            mem.sample()
            idle_mb = mem.peak_rss_kb / 1024
            mem.start()
            warm = run_level(base, bodies, args.warmup, 1, proc.pid, mem) if args.warmup else None
            print(f"server up in {health['startup_s']:.1f} s, idle RSS {idle_mb:.0f} MB; "
                  f"warm-up {args.warmup} requests"
                  + (f", p50 {warm['p50_ms']:.1f} ms" if warm else ""), flush=True)
            results = []
            for conc in levels:
                res = run_level(base, bodies, args.requests, conc, proc.pid, mem)
                results.append(res)
                print(f"c={conc}: p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, "
                      f"{res['throughput_rps']:.1f} req/s, errors {res['errors']}", flush=True)
            mem.stop.set()
            mem.join()
            mem.sample()
        finally:
            stop_server(proc)
    busy = sorted(set(busy_before) | set(busy_neighbours()))
    peak_mb = max(mem.peak_hwm_kb, mem.peak_rss_kb) / 1024
    by_c = {r["concurrency"]: r for r in results}
    met = {
        "p50_c1": by_c[1]["p50_ms"] < TARGETS["p50_c1_ms_max"] if 1 in by_c else None,
        "errors_c16": by_c[16]["errors"] == TARGETS["errors_c16"] if 16 in by_c else None,
        "server_rss": peak_mb < TARGETS["server_rss_mb_max"],
    }
    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine(),
                    "loadavg_at_end": list(os.getloadavg())},
        "client": "same machine as the server (loopback): one httpx.Client per thread, bodies "
                  "pre-encoded; its CPU use competes with the server's",
        "model": health.get("model"),
        "model_dir": str(model.relative_to(REPO) if model.is_relative_to(REPO) else model),
        "photos": {"count": len(photos), "seed": args.seed, "source": "skin8 (real photos)",
                   "mean_kb": float(np.mean([len(d) for _, d in photos]) / 1024)},
        "server": {"command": "kulit serve --host 127.0.0.1", "startup_s": health["startup_s"],
                   "idle_rss_mb": idle_mb},
        "warmup": {"requests": args.warmup, "p50_ms": warm["p50_ms"] if warm else None},
        "levels": results,
        "server_peak_rss_mb": peak_mb,
        "targets": TARGETS,
        "met": met,
    }
    if busy:
        out["note"] = ("CPU-heavy jobs ran concurrently on this machine during the benchmark: "
                       + "; ".join(b[:120] for b in busy))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")

    print(f"\n{'conc':>4} {'req':>5} {'err':>4} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8} "
          f"{'req/s':>6}")
    for r in results:
        print(f"{r['concurrency']:>4} {r['requests']:>5} {r['errors']:>4} {r['p50_ms']:>7.1f} "
              f"{r['p99_ms']:>7.1f} {r['mean_ms']:>8.1f} {r['throughput_rps']:>6.1f}")
    print(f"server peak RSS {peak_mb:.0f} MB; met {met}")
    if busy:
        print(f"note: {out['note']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
