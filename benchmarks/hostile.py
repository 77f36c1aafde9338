"""Hostile-input load test: degenerate images at concurrency 8 against `kulit serve` (issue 14).

    python benchmarks/hostile.py [--model models/kulit-skin8] [--rounds 3] [--concurrency 8]

Builds a corpus of small nasty files (thin strips, decompression bombs inside and outside the
pixel cap, huge PNG text chunks, mutated photos, broken multipart bodies), starts the server
on loopback, sends the whole corpus `--rounds` times in shuffled order from `--concurrency`
client threads, and records every status and latency, and the server's peak memory (VmRSS
sampled, VmHWM). Targets: peak RSS <= 500 MB, no 5xx, every response <= 2 s.
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
from serve import (  # noqa: E402
    REPO,
    MemorySampler,
    busy_neighbours,
    free_port,
    start_server,
    wait_healthy,
)

TARGETS = {"server_rss_mb_max": 500.0, "status_5xx": 0, "latency_s_max": 2.0}
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


def run(base: str, cases: list[tuple[str, str, bytes, str]], rounds: int, conc: int,
        seed: int) -> list[dict[str, Any]]:
    jobs = [c for _ in range(rounds) for c in cases]
    random.Random(seed).shuffle(jobs)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=60.0) as client:
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

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "kulit-skin8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "hostile.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    cases = corpus(args.seed)
    print(f"corpus: {len(cases)} cases built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc = start_server(args.model, port, log)
        try:
            health = wait_healthy(base, proc, log)
            mem = MemorySampler(proc.pid, every=0.05)
            mem.sample()
            idle_mb = mem.peak_rss_kb / 1024
            normal = [c for c in cases if c[0] == "normal"]
            run(base, normal, 8 * args.concurrency, args.concurrency, args.seed)  # warm-up
            mem.reset()
            mem.sample()
            warm_mb = mem.peak_rss_kb / 1024
            mem.start()
            t1 = time.perf_counter()
            results = run(base, cases, args.rounds, args.concurrency, args.seed)
            wall = time.perf_counter() - t1
            mem.sample()
            mem.stop.set()
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
    peak_mb = max(mem.peak_rss_kb, mem.peak_hwm_kb) / 1024
    out = {
        "requests": len(results), "concurrency": args.concurrency, "rounds": args.rounds,
        "wall_s": round(wall, 2), "server_alive_after": alive,
        "server_idle_rss_mb": round(idle_mb, 1),
        "server_warm_rss_mb": round(warm_mb, 1),  # after normal photos at this concurrency
        "server_peak_rss_mb": round(mem.peak_rss_kb / 1024, 1),
        "server_peak_hwm_mb": round(mem.peak_hwm_kb / 1024, 1),
        "status_5xx_or_failed": n5xx,
        "latency_s_max": round(worst["seconds"], 3),
        "latency_s_p99": round(float(np.percentile([r["seconds"] for r in results], 99)), 3),
        "slowest": {k: worst[k] for k in ("category", "name", "status", "code")},
        "over_2s": sorted({r["name"] for r in results if r["seconds"] > TARGETS["latency_s_max"]}),
        "by_category": {k: {"n": v["n"], "statuses": dict(v["statuses"]),
                            "worst_s": round(v["worst_s"], 3)} for k, v in sorted(by_cat.items())},
        "codes": dict(Counter(r["code"] for r in results)),
        "targets": TARGETS,
        "met": {"server_rss_mb_max": peak_mb <= TARGETS["server_rss_mb_max"],
                "status_5xx": n5xx == 0,
                "latency_s_max": worst["seconds"] <= TARGETS["latency_s_max"]},
        "health": health,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "busy_neighbours": busy_neighbours(),
                    "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("requests", "server_warm_rss_mb", "server_peak_rss_mb",
                                          "server_peak_hwm_mb", "status_5xx_or_failed",
                                          "latency_s_max",
                                          "latency_s_p99", "slowest", "met")}, indent=2))


if __name__ == "__main__":
    main()
