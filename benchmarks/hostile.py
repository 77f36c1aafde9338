"""Hostile-input load test against `kulit serve`.

    python benchmarks/hostile.py [--model models/kulit-skin8] [--rounds 3] [--concurrency 8]
                                 [--duration 120] [--clients 20] [--hostile-share 0.3]

Three parts, all on loopback against one server:

1. per class: the security audit's files at full size, one client, each sent 3 times (the
   truncated 40 MP PNG 10 times): time per answer, peak RSS of every process of the server
   (server, decode zygote, decode workers; sampled every 50 ms) and the RSS kept after it;
2. the shuffled corpus of `tests/hostile_files.py` (thin strips, bombs, text chunks, mutated
   photos, broken multipart bodies) `--rounds` times from `--concurrency` threads;
3. a mixed load: `--clients` clients for `--duration` seconds, a `--hostile-share` of their
   requests hostile (from parts 1 and 2), the rest real skin8 photos; the normal photos'
   latency percentiles; then the same clients with no hostile file (the control: on a busy
   machine, what the hostile files cost the others is the difference).

RSS is summed over the processes (VmRSS counts the pages the workers share with the zygote in
each of them, so the sum overstates); PSS (shared pages split between their users) is given
beside it. Targets: no 5xx, every answer <= 2 s, peak <= 500 MB, <= 20 MB kept after the
hostile requests, normal photos' p99 <= 1 s under the mixed load.
Writes benchmarks/results/hostile.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tests.hostile_files as hf  # noqa: E402  (the test suite's builders, at full size)
from serve import BOUNDARY as PHOTO_BOUNDARY  # noqa: E402
from serve import (  # noqa: E402
    REPO,
    MemorySampler,
    busy_neighbours,
    descendants,
    free_port,
    multipart,
    proc_status_kb,
    pss_kb,
    run_clients,
    sample_photos,
    start_server,
    wait_healthy,
)

TARGETS = {"server_rss_mb_max": 500.0, "status_5xx": 0, "latency_s_max": 2.0,
           "kept_mb_max": 20.0, "mixed_normal_p99_s_max": 1.0}
BOUNDARY = "kulit-hostile-7f3a"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(w: int, h: int, *, colour: int = 2, extra: bytes = b"", after: bytes = b"") -> bytes:
    """w x h zero pixels in one compressed stream: tiny on disk whatever the size."""
    channels = {0: 1, 2: 3, 6: 4}[colour]
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + w * channels)
    if w * h <= 60_000_000:
        idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    else:
        idat = comp.compress(row[: 1 << 16]) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0,
                                                              0))
            + extra + chunk(b"IDAT", idat) + after + chunk(b"IEND", b""))


def photo(seed: int, size: tuple[int, int], fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    noise = rng.normal(0, 40, (h // 8 + 1, w // 8 + 1, 3))
    arr = np.clip(140 + np.kron(noise, np.ones((8, 8, 1)))[:h, :w], 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, fmt)
    return buf.getvalue()


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(b))
        op = rng.choice(["set", "insert", "delete", "int", "truncate"])
        if op == "set":
            b[i] = rng.randrange(256)
        elif op == "insert":
            b[i:i] = rng.randbytes(rng.randint(1, 32))
        elif op == "delete":
            del b[i: i + rng.randint(1, 32)]
        elif op == "int":
            b[i: i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\0\0\0\0"])
        else:
            del b[max(16, i):]
    return bytes(b)


def body(data: bytes, boundary: str = BOUNDARY) -> bytes:
    return (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()


def corpus(seed: int) -> list[tuple[str, str, bytes, str]]:
    """(category, name, request body, content type) for every hostile case."""
    rng = random.Random(seed)
    ct = f"multipart/form-data; boundary={BOUNDARY}"
    files: list[tuple[str, str, bytes]] = []
    for w, h in [(40000, 1), (1, 40000), (10000, 4), (40_000_000, 1), (21, 1), (20000, 1000),
                 (1000, 20000), (4000, 200)]:
        files.append(("thin strip", f"{w}x{h}.png", png(w, h)))
    for w, h, c in [(6000, 6000, 2), (6000, 6000, 6), (6000, 6000, 0), (6324, 6324, 6),
                    (7000, 7000, 2), (65535, 65535, 2), (1 << 31, 1 << 31, 2)]:
        files.append(("bomb", f"{w}x{h}c{c}.png", png(w, h, colour=c)))
    files.append(("bomb", "5000x5000.jpg", photo(1, (5000, 5000), "JPEG")))
    files.append(("bomb", "5000x5000.webp", photo(2, (2500, 2500), "WEBP")))
    big_text = zlib.compress(b"a" * 50_000_000, 9)
    files += [
        ("text chunk", "ztxt-before.png", png(8, 8, extra=chunk(b"zTXt", b"k\0\0" + big_text))),
        ("text chunk", "ztxt-after.png", png(8, 8, after=chunk(b"zTXt", b"k\0\0" + big_text))),
        ("text chunk", "itxt.png", png(8, 8, extra=chunk(b"iTXt", b"k\0\1\0\0\0" + big_text))),
        ("text chunk", "text-9mb.png", png(8, 8, extra=chunk(b"tEXt", b"k\0" + b"t" * 9_000_000))),
        ("text chunk", "many-chunks.png",
         png(8, 8, extra=b"".join(chunk(b"tEXt", b"k%d\0v" % i) for i in range(50_000)))),
    ]
    seeds = [photo(3, (640, 480), "JPEG"), photo(4, (300, 200), "PNG"),
             photo(5, (400, 400), "WEBP"), photo(6, (320, 240), "BMP"), png(64, 64, colour=6)]
    for i in range(60):
        files.append(("mutated", f"mutated-{i}", mutate(rng.choice(seeds), rng)))
    cases = [(cat, name, body(data), ct) for cat, name, data in files]
    long_b = "b" * 300
    cases += [
        ("multipart", "boundary-300", body(seeds[0], long_b),
         f"multipart/form-data; boundary={long_b}"),
        ("multipart", "truncated", body(seeds[0])[:-40], ct),
        ("multipart", "no-boundary", body(seeds[0]), "multipart/form-data"),
        ("normal", "photo.jpg", body(seeds[0]), ct),
        ("normal", "photo.png", body(seeds[1]), ct),
    ]
    return cases


def client_from(base: str, i: int) -> httpx.Client:
    """A client with its own loopback address (127.0.0.2, .3, ...): the server limits
    concurrent uploads per client address, and real clients do not share one."""
    transport = httpx.HTTPTransport(local_address=f"127.0.0.{2 + i % 250}")
    return httpx.Client(base_url=base, timeout=60.0, transport=transport)


def run(base: str, cases: list[tuple[str, str, bytes, str]], rounds: int, conc: int,
        seed: int) -> list[dict[str, Any]]:
    jobs = [c for _ in range(rounds) for c in cases]
    random.Random(seed).shuffle(jobs)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        with client_from(base, i) as client:
            while True:
                with lock:
                    if not jobs:
                        return
                    cat, name, data, ctype = jobs.pop()
                t0 = time.perf_counter()
                try:
                    r = client.post("/api/v1/predict", content=data,
                                    headers={"content-type": ctype})
                    status, code = r.status_code, (r.json().get("error") or {}).get("code", "ok")
                except (httpx.HTTPError, ValueError) as e:
                    status, code = 0, type(e).__name__
                with lock:
                    results.append({"category": cat, "name": name, "status": status,
                                    "code": code, "seconds": time.perf_counter() - t0,
                                    "bytes": len(data)})

    run_clients(worker, conc)
    return results


def audit_classes() -> list[tuple[str, bytes, int]]:
    """(class, file, times sent): the security audit's hostile files, at the audit's sizes."""
    return [
        ("BMP RLE8 (now 415)", hf.bmp_rle8(4000, 4000), 3),
        ("progressive JPEG, 2,000 scans", hf.many_scan_jpeg(1500, 2000), 3),
        ("progressive JPEG 4000x4000, 30 scans (under the scan caps)",
         hf.many_scan_jpeg(4000, 30), 3),
        ("JPEG marker flood (200k COM)", hf.marker_flood(200_000), 3),
        ("JPEG fill flood (5 MB of 0xFF)", hf.marker_flood(0, 5_000_000), 3),
        ("PNG chunk flood (200k chunks)", hf.chunk_flood(200_000), 3),
        ("16-bit grey PNG 6324x6324", hf.png16(6324, 6324), 3),
        ("lossless WebP 6324x6324", hf.webp_lossless(6324), 3),
        ("animated WebP, 40 MP canvas", hf.webp_animated(6324), 3),
        ("ICO wrapping a 79 MP PNG (now 415)", hf.ico_wrapping(hf.png(8900, 8900)), 3),
        ("truncated 40 MP RGBA PNG, x10", hf.truncated_png(6324, 6324), 10),
        ("progressive CMYK JPEG 8944x8944", hf.cmyk_progressive_jpeg(8944), 3),
        ("normal photo, 640 px JPEG", photo(7, (640, 480), "JPEG"), 3),
    ]


def tree_mb(pid: int) -> dict[str, Any]:
    """RSS and PSS of the server and every process below it, now."""
    pids = descendants(pid)
    return {"rss_mb": round(sum(proc_status_kb(p, "VmRSS") for p in pids) / 1024, 1),
            "pss_mb": round(sum(pss_kb(p) for p in pids) / 1024, 1), "processes": len(pids)}


def settle(pid: int, seconds: float = 2.0) -> dict[str, Any]:
    time.sleep(seconds)  # a retired worker's replacement starts in the background
    return tree_mb(pid)


def run_classes(base: str, pid: int, classes: list[tuple[str, bytes, int]]
                ) -> list[dict[str, Any]]:
    """Each class alone, one request at a time: time, peak RSS of the tree, RSS kept after."""
    rows = []
    ct = f"multipart/form-data; boundary={BOUNDARY}"
    with httpx.Client(base_url=base, timeout=60.0) as client:
        for name, data, times in classes:
            before = settle(pid, 1.0)
            mem = MemorySampler(pid, every=0.05, pss=True)
            mem.sample()
            mem.start()
            seconds, statuses, codes = [], Counter(), Counter()
            for _ in range(times):
                t0 = time.perf_counter()
                r = client.post("/api/v1/predict", content=body(data),
                                headers={"content-type": ct})
                seconds.append(time.perf_counter() - t0)
                statuses[str(r.status_code)] += 1
                codes[(r.json().get("error") or {}).get("code", "ok")] += 1
            mem.sample()
            mem.stop.set()
            after = settle(pid, 2.0)
            rows.append({"class": name, "bytes": len(data), "n": times,
                         "statuses": dict(statuses), "codes": dict(codes),
                         "seconds_max": round(max(seconds), 3),
                         "seconds_median": round(float(np.median(seconds)), 3),
                         "peak_rss_mb": round(mem.peak_rss_kb / 1024, 1),
                         "peak_pss_mb": round(mem.peak_pss_kb / 1024, 1),
                         "rss_before_mb": before["rss_mb"], "rss_after_mb": after["rss_mb"],
                         "kept_rss_mb": round(after["rss_mb"] - before["rss_mb"], 1),
                         "kept_pss_mb": round(after["pss_mb"] - before["pss_mb"], 1)})
            print(f"  {name:38s} {rows[-1]['seconds_max']:6.2f} s  peak "
                  f"{rows[-1]['peak_rss_mb']:6.1f} MB  kept {rows[-1]['kept_rss_mb']:+5.1f} MB  "
                  f"{dict(codes)}", file=sys.stderr)
    return rows


def mixed_load(base: str, pid: int, normal: list[bytes], hostile: list[tuple[str, bytes, str]],
               clients: int, duration: float, share: float, seed: int) -> dict[str, Any]:
    """`clients` threads for `duration` s; each request hostile with probability `share`."""
    photo_ct = f"multipart/form-data; boundary={PHOTO_BOUNDARY}"
    stop = time.monotonic() + duration
    lock = threading.Lock()
    normal_s: list[float] = []
    hostile_s: list[float] = []
    statuses: Counter[str] = Counter()
    mem = MemorySampler(pid, every=0.1, pss=True)
    mem.sample()
    mem.start()

    def worker(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        with client_from(base, i) as client:
            while time.monotonic() < stop:
                is_hostile = rng.random() < share
                if is_hostile:
                    _, data, ctype = rng.choice(hostile)
                else:
                    data, ctype = rng.choice(normal), photo_ct
                t0 = time.perf_counter()
                try:
                    r = client.post("/api/v1/predict", content=data,
                                    headers={"content-type": ctype})
                    status = str(r.status_code)
                    if r.status_code != 200:
                        status += " " + (r.json().get("error") or {}).get("code", "?")
                except (httpx.HTTPError, ValueError) as e:
                    status = type(e).__name__
                dt = time.perf_counter() - t0
                with lock:
                    (hostile_s if is_hostile else normal_s).append(dt)
                    statuses[("hostile " if is_hostile else "normal ") + status] += 1

    run_clients(worker, clients)
    mem.sample()
    mem.stop.set()
    bad = sum(n for k, n in statuses.items() if not k.split()[1].isdigit()
              or int(k.split()[1]) >= 500)
    busy = sum(n for k, n in statuses.items() if k.split()[1] == "503")
    return {
        "clients": clients, "duration_s": duration, "hostile_share": share,
        "normal_requests": len(normal_s), "hostile_requests": len(hostile_s),
        "normal_p50_s": round(float(np.percentile(normal_s, 50)), 3) if normal_s else None,
        "normal_p99_s": round(float(np.percentile(normal_s, 99)), 3) if normal_s else None,
        "normal_max_s": round(max(normal_s), 3) if normal_s else None,
        "hostile_p99_s": round(float(np.percentile(hostile_s, 99)), 3) if hostile_s else None,
        "hostile_max_s": round(max(hostile_s), 3) if hostile_s else None,
        "statuses": dict(sorted(statuses.items())), "status_5xx_or_failed": bad,
        "status_503_busy": busy,
        "peak_rss_mb": round(mem.peak_rss_kb / 1024, 1),
        "peak_pss_mb": round(mem.peak_pss_kb / 1024, 1),
    }


def sandbox_overhead(data: bytes, rounds: int = 5, n: int = 40) -> dict[str, Any]:
    """Decode + reduce of one photo in this process vs through a DecodePool (one worker),
    interleaved rounds of `n`: the medians, and what the sandbox adds."""
    from kulit.serving.decode_sandbox import DecodePool, reduce_for_model
    from kulit.serving.preprocess import Preprocessing
    from kulit.serving.quality import QualityLimits

    pre, limits = Preprocessing(), QualityLimits()
    times: dict[str, list[float]] = {"in_process": [], "sandbox": []}
    with DecodePool(1) as pool:
        pool.reduce_for_model(data, pre, limits)
        for _ in range(rounds):
            for name, fn in (("in_process", reduce_for_model), ("sandbox", pool.reduce_for_model)):
                for _ in range(n):
                    t0 = time.perf_counter()
                    fn(data, pre, limits)
                    times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) * 1000 for k, v in times.items()}
    return {"photo": "640x480 JPEG", "in_process_p50_ms": round(med["in_process"], 2),
            "sandbox_p50_ms": round(med["sandbox"], 2),
            "added_ms": round(med["sandbox"] - med["in_process"], 2), "n": rounds * n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "kulit-skin8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--duration", type=float, default=120.0, help="mixed load, seconds")
    ap.add_argument("--clients", type=int, default=20, help="mixed load clients")
    ap.add_argument("--hostile-share", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "hostile.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    cases = corpus(args.seed)
    classes = audit_classes()
    normal_photos = [multipart(n, d) for n, d in sample_photos(32, args.seed)]
    print(f"corpus: {len(cases)} cases and {len(classes)} classes built in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    ct = f"multipart/form-data; boundary={BOUNDARY}"
    hostile_mix = ([(n, body(d), ct) for n, d, _ in classes if not n.startswith("normal")]
                   + [(n, b, c) for cat, n, b, c in cases if cat != "normal"])
    overhead = sandbox_overhead(photo(3, (640, 480), "JPEG"))
    print(f"sandbox overhead: {overhead}", file=sys.stderr)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc = start_server(args.model, port, log)
        try:
            health = wait_healthy(base, proc, log)
            idle = settle(proc.pid, 3.0)  # the decode workers start in the background
            normal = [c for c in cases if c[0] == "normal"]
            run(base, normal, 8 * args.concurrency, args.concurrency, args.seed)  # warm-up
            warm = settle(proc.pid)
            print("per class:", file=sys.stderr)
            per_class = run_classes(base, proc.pid, classes)
            mem = MemorySampler(proc.pid, every=0.05, pss=True)
            mem.sample()
            mem.start()
            t1 = time.perf_counter()
            results = run(base, cases, args.rounds, args.concurrency, args.seed)
            wall = time.perf_counter() - t1
            mem.sample()
            mem.stop.set()
            after_hostile = settle(proc.pid)
            print(f"mixed load: {args.clients} clients, {args.duration:g} s", file=sys.stderr)
            mixed = mixed_load(base, proc.pid, normal_photos, hostile_mix, args.clients,
                               args.duration, args.hostile_share, args.seed)
            after_mixed = settle(proc.pid)
            # the control: the same clients with no hostile file, on the same (busy) machine
            print("mixed load control: no hostile files", file=sys.stderr)
            control = mixed_load(base, proc.pid, normal_photos, hostile_mix, args.clients,
                                 args.duration, 0.0, args.seed)
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(10)

    by_cat: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "statuses": Counter(),
                                                             "worst_s": 0.0})
    for r in results:
        c = by_cat[r["category"]]
        c["n"] += 1
        c["statuses"][str(r["status"])] += 1
        c["worst_s"] = max(c["worst_s"], r["seconds"])
    worst = max(results, key=lambda r: r["seconds"])
    n5xx = sum(1 for r in results if r["status"] >= 500 or r["status"] == 0)
    n5xx += sum(n for row in per_class for k, n in row["statuses"].items() if int(k) >= 500)
    n5xx += mixed["status_5xx_or_failed"]
    peak_mb = max([mem.peak_rss_kb / 1024, mixed["peak_rss_mb"]]
                  + [row["peak_rss_mb"] for row in per_class])
    peak_pss = max([mem.peak_pss_kb / 1024, mixed["peak_pss_mb"]]
                   + [row["peak_pss_mb"] for row in per_class])
    latency_max = max([worst["seconds"]] + [row["seconds_max"] for row in per_class])
    hostile_requests = len(results) + sum(row["n"] for row in per_class)
    kept = after_hostile["rss_mb"] - warm["rss_mb"]
    out = {
        "requests": len(results), "concurrency": args.concurrency, "rounds": args.rounds,
        "wall_s": round(wall, 2), "server_alive_after": alive,
        "memory": {"idle": idle, "warm": warm, "after_hostile": after_hostile,
                   "after_mixed": after_mixed,
                   "note": "every process of the server: server, decode zygote, workers; "
                           "RSS double-counts the pages the workers share with the zygote"},
        "per_class": per_class,
        "hostile_requests_before_kept": hostile_requests,
        "kept_rss_mb_after_hostile": round(kept, 1),
        "kept_pss_mb_after_hostile": round(after_hostile["pss_mb"] - warm["pss_mb"], 1),
        "server_peak_rss_mb": round(peak_mb, 1),
        "server_peak_pss_mb": round(peak_pss, 1),
        "corpus_peak_rss_mb": round(mem.peak_rss_kb / 1024, 1),
        "corpus_peak_pss_mb": round(mem.peak_pss_kb / 1024, 1),
        "status_5xx_or_failed": n5xx,
        "latency_s_max": round(latency_max, 3),
        "corpus_latency_s_p99": round(float(np.percentile([r["seconds"] for r in results],
                                                          99)), 3),
        "slowest_corpus": {k: worst[k] for k in ("category", "name", "status", "code")},
        "over_2s": sorted({r["name"] for r in results if r["seconds"] > TARGETS["latency_s_max"]}
                          | {row["class"] for row in per_class
                             if row["seconds_max"] > TARGETS["latency_s_max"]}),
        "by_category": {k: {"n": v["n"], "statuses": dict(v["statuses"]),
                            "worst_s": round(v["worst_s"], 3)} for k, v in sorted(by_cat.items())},
        "codes": dict(Counter(r["code"] for r in results)),
        "mixed_load": mixed,
        "mixed_load_control": control,
        "sandbox_overhead": overhead,
        "targets": TARGETS,
        "met": {"server_rss_mb_max": peak_mb <= TARGETS["server_rss_mb_max"],
                # the same limit on PSS: what the processes hold, shared pages counted once
                "server_pss_mb_max": peak_pss <= TARGETS["server_rss_mb_max"],
                "status_5xx": n5xx == 0,
                "latency_s_max": latency_max <= TARGETS["latency_s_max"],
                "kept_mb_max": kept <= TARGETS["kept_mb_max"],
                "mixed_normal_p99_s_max": (mixed["normal_p99_s"] or 0)
                <= TARGETS["mixed_normal_p99_s_max"]},
        "health": health,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg": os.getloadavg(),
                    "busy_neighbours": busy_neighbours(),
                    "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("requests", "server_peak_rss_mb",
                                          "kept_rss_mb_after_hostile", "status_5xx_or_failed",
                                          "latency_s_max", "over_2s", "met")}, indent=2))
    for run_ in (mixed, control):
        print(json.dumps({k: run_[k] for k in ("hostile_share", "normal_requests",
                                               "hostile_requests", "normal_p50_s",
                                               "normal_p99_s", "peak_rss_mb")}))


if __name__ == "__main__":
    main()
