"""`kulit predict --engine ray`: inputs, Parquet output and resume; and, on a real local Ray
cluster (2 CPUs on 127.0.0.1, started here), the same answers as the local path, a worker
killed mid-run, a resumed run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kulit.cli import app
from kulit.errors import ImageError, KulitError
from tests.conftest import SHIPPED_MODEL, make_image

N_PHOTOS = 50
runner = CliRunner()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """49 generated photos of several sizes and one file that is not an image."""
    root = tmp_path_factory.mktemp("scale_photos")
    for i in range(N_PHOTOS - 1):
        make_image(i, (240 + 8 * (i % 5), 256), cls=i % 3).save(root / f"p{i:02d}.jpg")
    (root / "p49.jpg").write_bytes(b"not an image at all")
    return root


@pytest.fixture(scope="module")
def model() -> Path:
    if not (SHIPPED_MODEL / "card.json").is_file():
        pytest.skip("the shipped model models/kulit-skin8 is not here")
    return SHIPPED_MODEL


@pytest.fixture(scope="module")
def local_run(photos: Path, model: Path) -> list[str]:
    """`kulit predict --json` on the local path, the reference for every Ray run."""
    r = runner.invoke(app, ["predict", "--json", "--model", str(model), str(photos)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == N_PHOTOS
    return lines


# ---------------------------------------------------------------------------------------------
# Without Ray: what is read, what is written


def test_lists_folders_text_and_csv_lists(tmp_path: Path, photos: Path) -> None:
    from kulit.scale.sources import list_sources

    (tmp_path / "list.txt").write_text(f"# photos\n{photos}/p01.jpg\n\nsub/a.jpg\n"
                                       "s3://bucket/x.jpg\n", encoding="utf-8")
    (tmp_path / "list.csv").write_text(f"label,path\nA,{photos}/p02.jpg\nB,{photos}/p01.jpg\n",
                                       encoding="utf-8")
    got = list_sources([tmp_path / "list.txt", tmp_path / "list.csv", photos / "p03.jpg"])
    assert got == [f"{photos}/p01.jpg", str(tmp_path.resolve() / "sub/a.jpg"),
                   "s3://bucket/x.jpg", f"{photos}/p02.jpg", str(photos / "p03.jpg")]
    assert len(list_sources([photos])) == N_PHOTOS
    (tmp_path / "empty.txt").write_text("# nothing yet\n", encoding="utf-8")
    with pytest.raises(KulitError, match="no files"):
        list_sources([tmp_path / "empty.txt"])


def test_reads_uris_through_pyarrow(photos: Path, tmp_path: Path) -> None:
    from kulit.scale.sources import read_source

    data = read_source((photos / "p01.jpg").as_uri())
    assert data == (photos / "p01.jpg").read_bytes()
    with pytest.raises(ImageError) as e:
        read_source((tmp_path / "gone.jpg").as_uri())
    assert e.value.code == "not_found"
    with pytest.raises(ImageError) as e:
        read_source(tmp_path.as_uri())
    assert e.value.code == "not_image"
    assert read_source(str(photos / "p01.jpg")) == str(photos / "p01.jpg")


def test_parquet_rows_read_back_as_the_json_lines(tmp_path: Path, local_run: list[str]
                                                  ) -> None:
    import pyarrow.parquet as pq

    from kulit.scale.output import PartWriter, done_sources, read_rows

    lines = local_run
    rows = [json.loads(line) for line in lines]
    assert any("error" in r for r in rows) and any(r.get("gate") for r in rows)
    w = PartWriter(tmp_path, rows_per_part=7)
    for line in lines:
        w.add(line)
    w.flush()
    assert len(list(tmp_path.glob("part-*.parquet"))) == -(-N_PHOTOS // 7)
    assert read_rows(tmp_path) == rows
    table = pq.read_table(sorted(tmp_path.glob("part-*.parquet"))[-1])
    last = table.slice(table.num_rows - 1).to_pylist()[0]  # p49.jpg, not an image
    assert (last["source"], last["error"], last["status"]) == (rows[-1]["source"], "not_image",
                                                                None)
    first = pq.read_table(sorted(tmp_path.glob("part-*.parquet"))[0]).to_pylist()[0]
    assert (first["status"], first["confidence"]) == (rows[0]["status"], rows[0]["confidence"])
    assert done_sources(tmp_path, rows[0].get("model") or "kulit-skin8") == \
        {r["source"] for r in rows}
    with pytest.raises(KulitError, match="another --out"):
        done_sources(tmp_path, "some-other-model")


@pytest.mark.parametrize("args, message", [
    (["--out", "o"], "--out needs --engine ray"),
    (["--address", "auto"], "--address needs --engine ray"),
    (["--engine", "spark"], "use one of local, ray"),
    (["--engine", "ray", "--heatmap-dir", "h"], "local engine only"),
])
def test_engine_options_are_checked(photos: Path, args: list[str], message: str) -> None:
    r = runner.invoke(app, ["predict", str(photos / "p01.jpg"), *args])
    assert r.exit_code == 2 and message in r.output


def test_plain_install_needs_no_ray(photos: Path) -> None:
    """Without ray, the local path works and --engine ray names the extra to install."""
    code = ("import sys; sys.modules['ray'] = None\n"
            "from kulit.cli import app\n"
            f"app(['predict', {str(photos / 'p01.jpg')!r}, '--engine', 'ray'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).parents[1], timeout=120)
    assert r.returncode == 2, r.stderr
    assert "pip install 'kulit[scale]'" in r.stderr and "Traceback" not in r.stderr
    local = ("import sys; sys.modules['ray'] = None\nfrom kulit.cli import app\n"
             f"app(['predict', '--json', {str(photos / 'p01.jpg')!r}])")
    r = subprocess.run([sys.executable, "-c", local], capture_output=True, text=True,
                       cwd=Path(__file__).parents[1], timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["status"], r.stderr


# ---------------------------------------------------------------------------------------------
# On a real local Ray cluster


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    from kulit.scale.cluster import start_local

    # ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", ...), started
    # again if a busy machine makes the raylet miss Ray's 30 s registration window
    start_local(num_cpus=2, object_store_memory=200 * 2**20)
    try:
        yield
    finally:
        ray.shutdown()


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every process under `pid` (this test's Ray processes only)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = {}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                try:
                    found[child] = (Path("/proc") / str(child) / "cmdline").read_bytes() \
                        .replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                frontier.append(child)
    return found


@pytest.mark.ray
def test_same_answers_as_the_local_path(ray_cluster: None, photos: Path, model: Path,
                                        local_run: list[str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from kulit.scale.batch import RayOptions, run_ray_predict

    capsys.readouterr()
    assert run_ray_predict([photos], model, opts=RayOptions(actors=2)) == 0
    assert capsys.readouterr().out.splitlines() == local_run  # the same lines, same order


@pytest.mark.ray
def test_worker_killed_mid_run_loses_and_repeats_nothing(
        ray_cluster: None, photos: Path, model: Path, local_run: list[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kulit.scale import batch
    from kulit.scale.output import read_rows

    killed: list[int] = []

    class KillOnce(batch.Progress):
        """After the 5th row, SIGKILL one predictor actor (a worker lost mid-run)."""

        def update(self) -> None:
            super().update()
            if self.n == 5:
                actors = [p for p, cmd in descendants(os.getpid()).items()
                          if "PredictActor" in cmd]
                assert actors, "no predictor actor process found"
                os.kill(actors[0], signal.SIGKILL)
                killed.append(actors[0])

    monkeypatch.setattr(batch, "Progress", KillOnce)
    out = tmp_path / "out"
    assert batch.run_ray_predict([photos], model, out=out,
                                 opts=batch.RayOptions(actors=2, batch_size=2)) == 0
    assert len(killed) == 1
    # every photo once, each with the local path's answer, in input order
    assert read_rows(out) == [json.loads(line) for line in local_run]


@pytest.mark.ray
def test_interrupted_run_resumes_with_only_the_missing_photos(
        ray_cluster: None, photos: Path, model: Path, local_run: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    from kulit.scale import batch
    from kulit.scale.output import read_rows

    class CtrlC(batch.Progress):
        def update(self) -> None:
            super().update()
            if self.n == 20:
                raise KeyboardInterrupt

    out = tmp_path / "out"
    listed = tmp_path / "photos.csv"  # the first run reads a CSV list, the second the folder
    listed.write_text("label,path\n" + "".join(f"x,{photos}/p{i:02d}.jpg\n"
                                               for i in range(N_PHOTOS)))
    monkeypatch.setattr(batch, "Progress", CtrlC)
    with pytest.raises(KeyboardInterrupt):
        batch.run_ray_predict([listed], model, out=out)
    monkeypatch.undo()
    before = set(out.glob("part-*.parquet"))
    first = read_rows(out)
    assert len(first) == 20  # what was answered before Ctrl+C is kept
    (out / ".part-killed.parquet.tmp").write_bytes(b"PAR1 half written")  # a write cut short

    capsys.readouterr()
    assert batch.run_ray_predict([photos], model, out=out) == 0
    assert f"20 of {N_PHOTOS} photos already in {out}; predicting {N_PHOTOS - 20}" in \
        capsys.readouterr().err
    new = set(out.glob("part-*.parquet")) - before
    done_now = [s for p in new for s in pq.read_table(p, columns=["source"])["source"]
                .to_pylist()]
    assert sorted(done_now) == sorted({json.loads(line)["source"] for line in local_run}
                                      - {r["source"] for r in first})
    rows = read_rows(out)
    assert sorted(rows, key=lambda r: r["source"]) == \
        sorted((json.loads(line) for line in local_run), key=lambda r: r["source"])
    assert batch.run_ray_predict([photos], model, out=out) == 0  # nothing left to do
    assert set(out.glob("part-*.parquet")) == before | new


@pytest.mark.ray
def test_evaluate_on_ray_writes_what_the_local_engine_writes(
        ray_cluster: None, model: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for c, name in enumerate(["Chickenpox", "Melanoma"]):
        (data / name).mkdir(parents=True)
        for i in range(6):
            make_image(100 * c + i, (256, 240), cls=c).save(data / name / f"{i}.jpg")
    (data / "Melanoma" / "broken.jpg").write_bytes(b"\xff\xd8 cut short")
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        r = runner.invoke(app, ["evaluate", "--model", str(model), "--data", str(data),
                                "--split", "all", "--out", str(out), "--engine", engine])
        assert r.exit_code == 0, r.output
        outputs[engine] = out
    assert (outputs["ray"] / "predictions.csv").read_text() == \
        (outputs["local"] / "predictions.csv").read_text()
    local, ray = (json.loads((outputs[e] / "metrics.json").read_text()) for e in outputs)
    assert ray["skipped"] == local["skipped"] and len(local["skipped"]) == 1
    assert {k: v for k, v in ray.items() if k != "run"} == \
        {k: v for k, v in local.items() if k != "run"}


@pytest.mark.parametrize("args, message", [
    (["--replicas", "2", "--clinic"], "run in one process"),
    (["--replicas", "1", "--autoscale", "1,2"], "not both"),
    (["--autoscale", "3,1"], "need 1 <= MIN <= MAX"),
    (["--autoscale", "two"], "expected MIN,MAX"),
])
def test_replica_options_are_checked(args: list[str], message: str) -> None:
    r = runner.invoke(app, ["serve", *args])
    assert r.exit_code == 2 and message in r.output


@pytest.mark.ray
def test_ray_serve_replica_carries_pages_api_and_docs(ray_cluster: None, model: Path,
                                                      photos: Path) -> None:
    import httpx
    from fastapi.testclient import TestClient
    from ray import serve

    from kulit.scale.serve import APP_NAME, build_app
    from kulit.web.app import create_app
    from kulit.web.settings import Settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    photo = (photos / "p07.jpg").read_bytes()
    with TestClient(create_app(Settings(model_dir=model))) as local:
        want = local.post("/api/v1/predict", files={"image": ("p.jpg", photo, "image/jpeg")})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(model, replicas=1), name=APP_NAME, route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            page = c.get("/?lang=en")
            assert page.status_code == 200 and "content-security-policy" in page.headers
            assert "not a diagnosis" in page.text.lower()
            assert c.get("/docs").status_code == 200
            assert c.get("/static/kulit.css").status_code == 200
            got = c.post("/api/v1/predict", files={"image": ("p.jpg", photo, "image/jpeg")})
            assert got.status_code == 200
            strip = ("timing_ms", "request_id")
            assert {k: v for k, v in got.json().items() if k not in strip} == \
                {k: v for k, v in want.json().items() if k not in strip}
            bad = c.post("/api/v1/predict", files={"image": ("x.jpg", b"nope", "image/jpeg")})
            assert bad.status_code in (400, 415, 422) and "error" in bad.json()
    finally:
        serve.shutdown()
