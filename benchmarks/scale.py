"""More than one machine, measured on one: Ray Data batch prediction and Ray Serve replicas.

    python benchmarks/scale.py [--model models/kulit-skin8] [--photos 600] [--requests 400]

Batch: the same seeded real skin8 photos through the local path (`kulit predict`'s
`predict_files`, 2 single-thread workers, sandboxed decode) and through `--engine ray` with 1
and 2 actors on a local Ray cluster of 2 CPUs started here, in interleaved rounds (the best
round of each counts: the neighbours' load changes by the minute). For each run: photos/s end
to end (actor start included) and steady (first to last row), and the peak RSS of each
predictor actor with its decode worker. The engine's overhead is local photos/s over Ray's
photos/s at 2 actors, minus 1.
Serving: POST /api/v1/predict at concurrency 16 (benchmarks/serve.py's client) against
`kulit serve` (one uvicorn process) and `kulit serve --replicas 1|2` (Ray Serve), with each
server's peak memory. Client, servers and Ray share this machine's CPUs; so do the other jobs
running now (listed under "busy" in the JSON). Writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import (  # noqa: E402
    MIME,
    REPO,
    SKIN8,
    MemorySampler,
    busy_neighbours,
    descendants,
    free_port,
    multipart,
    proc_status_kb,
    run_level,
    sample_photos,
    wait_healthy,
)


def photo_paths(n: int, seed: int) -> list[str]:
    files = sorted(p for p in SKIN8.rglob("*") if p.suffix.lower() in MIME)
    rng = np.random.default_rng(seed)
    return [str(files[i]) for i in sorted(rng.choice(len(files), min(n, len(files)),
                                                     replace=False))]


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def local_run(files: list[str], model: Path) -> dict[str, Any]:
    """`kulit predict --json`'s path: predict_files with 2 workers, answer and JSON per photo."""
    from kulit.predict_cli import _error_json, _json, predict_files
    from kulit.serving.answer import answer_for
    from kulit.serving.decode_sandbox import DecodePool
    from kulit.serving.predict import Predictor

    t0 = time.perf_counter()
    predictor = Predictor(model, threads=1, max_concurrent=2)
    predictor.decoder = DecodePool(2)
    ready = time.perf_counter()
    times = []
    for f, r in zip(files, predict_files(predictor, [Path(f) for f in files], top_k=3,
                                         heatmap=False, workers=2, batch_size=32), strict=True):
        json.dumps(_error_json(f, r) if not hasattr(r, "probs")
                   else _json(f, answer_for(r, predictor.card), predictor.model_id))
        times.append(time.perf_counter())
    predictor.decoder.close()
    return summarise(len(files), t0, ready, times)


def summarise(n: int, t0: float, ready: float, times: list[float]) -> dict[str, Any]:
    """Steady photos/s counts from the first arrival on: Ray hands over whole blocks (tens of
    photos at once), so the photos of the first burst were computed before it and are left
    out with its time."""
    k = sum(t <= times[0] + 0.05 for t in times)  # the first burst
    steady = (n - k) / (times[-1] - times[0]) if n > k and times[-1] > times[0] else None
    return {"photos": n, "wall_s": round(times[-1] - t0, 2), "first_burst": k,
            "start_s": round(ready - t0, 2),
            "first_row_s": round(times[0] - t0, 2),
            "photos_per_s_end_to_end": round(n / (times[-1] - t0), 1),
            "photos_per_s_steady": round(steady, 1) if steady else None}


class ActorMemory(threading.Thread):
    """Peak RSS of each predictor actor process plus its decode zygote and workers."""

    def __init__(self, ignore: set[int]) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak: dict[int, int] = {}
        self.ignore = ignore  # a previous run's actors still shutting down

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for pid in set(actor_pids()) - self.ignore:
                kb = sum(proc_status_kb(p, "VmRSS") for p in descendants(pid))
                self.peak[pid] = max(self.peak.get(pid, 0), kb)


def actor_pids() -> list[int]:
    found = []
    for pid in descendants(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"PredictActor" in cmd:
            found.append(pid)
    return found


def ray_run(files: list[str], model: Path, actors: int) -> dict[str, Any]:
    from kulit.scale.batch import RayOptions, predict_rows

    time.sleep(5)  # the previous run's actors are gone
    mem = ActorMemory(ignore=set(actor_pids()))
    mem.start()
    t0 = time.perf_counter()
    times = []
    for _ in predict_rows(files, model, opts=RayOptions(actors=actors)):
        times.append(time.perf_counter())
    mem.stop.set()
    res = summarise(len(files), t0, t0, times)
    res.pop("start_s")
    res["actors"] = actors
    res["actor_rss_mb"] = sorted(round(kb / 1024) for kb in mem.peak.values())
    return res


def ray_processes_rss_mb() -> int:
    """What Ray itself holds on this node (raylet, GCS, agents, idle workers), in MB."""
    me = os.getpid()
    return round(sum(proc_status_kb(p, "VmRSS") for p in descendants(me) if p != me) / 1024)


def serve_level(model: Path, replicas: int | None, bodies: list[bytes], n: int,
                log: Path) -> dict[str, Any]:
    port = free_port()
    kulit = Path(sys.executable).with_name("kulit")
    cmd = [str(kulit), "serve", "--model", str(model), "--port", str(port)]
    if replicas:
        cmd += ["--replicas", str(replicas)]
    # one client address sends all 16 streams here: lift the per-client cap to the level
    env = {**os.environ, "KULIT_MAX_UPLOADS_PER_CLIENT": "16"}
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            health = wait_healthy(base, proc, log, timeout=300)
        except SystemExit as e:  # did not start in time (a loaded machine): say so, go on
            return {"server": f"ray serve, {replicas} replica(s)" if replicas
                    else "uvicorn, 1 process", "error": str(e.code)}
        mem = MemorySampler(proc.pid)
        mem.start()
        mem.sample()
        run_level(base, bodies, 32, 4, proc.pid, mem)  # warm-up
        res = run_level(base, bodies, n, 16, proc.pid, mem)
        mem.stop.set()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    keep = ("requests", "errors", "status_counts", "p50_ms", "p99_ms", "throughput_rps",
            "server_cpu_ms_per_request", "client_cpu_ms_per_request",
            "server_rss_peak_mb_sampled")
    return {"server": f"ray serve, {replicas} replica(s)" if replicas else "uvicorn, 1 process",
            "startup_s": round(health["startup_s"], 1),
            **{k: res[k] for k in keep if k in res}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "kulit-skin8")
    ap.add_argument("--photos", type=int, default=400)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip-serve", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale.json")
    args = ap.parse_args()
    import ray

    from kulit.scale.cluster import start_local

    files = photo_paths(args.photos, args.seed)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "ray": ray.__version__},
        "busy": busy_neighbours(), "load_avg_start": load_avg(), "batch": {}, "serve": [],
    }
    print(f"load {load_avg()}; busy: {len(result['busy'])} neighbour job(s)", flush=True)
    t0 = time.perf_counter()
    start_local(num_cpus=2)
    batch = result["batch"]
    batch["ray_init_s"] = round(time.perf_counter() - t0, 1)
    batch["ray_idle_rss_mb"] = ray_processes_rss_mb()
    # interleaved rounds (the neighbours' load changes by the minute); the best round counts
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray_1_actor": [], "ray_2_actor": []}
    for _ in range(args.rounds):
        for name in runs:
            r = (local_run(files, args.model) if name == "local"
                 else ray_run(files, args.model, int(name.split("_")[1])))
            r["load_avg"] = load_avg()
            runs[name].append(r)
            print(name, r, flush=True)
    ray.shutdown()
    batch["rounds"] = runs
    best = {name: max(rs, key=lambda r: r["photos_per_s_steady"] or 0) for name, rs in runs.items()}
    batch["best"] = best
    for key in ("photos_per_s_steady", "photos_per_s_end_to_end"):
        batch[f"overhead_2_actors_{key.removeprefix('photos_per_s_')}"] = round(
            best["local"][key] / best["ray_2_actor"][key] - 1, 3)
    if not args.skip_serve:
        bodies = [multipart(name, data) for name, data in sample_photos(64, args.seed)]
        log = Path("/tmp") / f"kulit-scale-serve-{os.getpid()}.log"
        save(result, args.out)
        for replicas in (None, 1, 2):
            r = serve_level(args.model, replicas, bodies, args.requests, log)
            r["load_avg"] = load_avg()
            result["serve"].append(r)
            print(r, flush=True)
            save(result, args.out)
    result["load_avg_end"] = load_avg()
    save(result, args.out)
    print(f"wrote {args.out}")


def save(result: dict[str, Any], out: Path) -> None:
    """Written after each part, so a run cut short keeps what it measured."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
