"""Train on the tiny backbone and generated images, export to ONNX, serve without torch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kulit.cli import app
from kulit.config import make_config
from kulit.dataprep.split import run_data
from kulit.errors import ModelError
from kulit.serving.calibration import choose_threshold, fit_temperature
from kulit.serving.predict import Predictor
from kulit.serving.preprocess import open_image, preprocess_image
from kulit.training.backbones import REGISTRY, build_backbone
from kulit.training.export import export, load_run
from kulit.training.train import train
from tests.conftest import SKIN8, TINY_CLASSES

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_split(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("split")
    assert run_data(tiny_dataset, out, seed=0, val_frac=0.25, test_frac=0.15) == 0
    return out / "split.csv"


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tiny_split, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    cfg = make_config(
        str(tiny_dataset), str(tiny_split), "kulit", out=str(tmp / "run"), backbone="tiny",
        pretrained=False, input_size=32, epochs=60, views=3, patience=0,
        cache_dir=str(tmp / "cache"), lr=1e-2, finetune_blocks=1,
    )
    return train(cfg, log=lambda s: None)


def test_registry_has_the_required_backbones():
    assert {"efficientnet-lite0", "efficientnet-lite2", "densenet201", "tiny"} <= set(REGISTRY)


@pytest.mark.parametrize("name,size,channels", [("efficientnet-lite0", 64, 1280),
                                                ("tiny", 32, 32)])
def test_backbone_feature_maps(name, size, channels):
    net = build_backbone(name, size, pretrained=name != "tiny").eval()
    with torch.no_grad():
        f = net(torch.zeros(1, 3, size, size))
    assert f.shape[:2] == (1, channels)


def test_lite_weights_are_real_imagenet_weights():
    a = build_backbone("efficientnet-lite0", 64, pretrained=True).state_dict()
    b = build_backbone("efficientnet-lite0", 64, pretrained=False).state_dict()
    key = "net._conv_stem.weight"
    assert not torch.allclose(a[key], b[key])


def test_densenet_without_weights_is_a_clear_error():
    with pytest.raises(ModelError, match="--weights"):
        build_backbone("densenet201", 64, pretrained=True)


def test_run_dir_contents(tiny_run: Path):
    for f in ("checkpoint.pt", "config.json", "history.csv", "history.md", "curves.png",
              "summary.json"):
        assert (tiny_run / f).is_file(), f
    rows = list(csv.DictReader(open(tiny_run / "history.csv")))
    assert len(rows) == 60
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    # the colours are separable: the head must learn them
    assert float(rows[-1]["accuracy"]) > 0.9


def test_feature_cache_is_reused(tiny_dataset, tiny_split, tmp_path):
    kw = dict(backbone="tiny", pretrained=False, input_size=32, epochs=2, views=2,
              cache_dir=str(tmp_path / "cache"), finetune_blocks=0)
    train(make_config(str(tiny_dataset), str(tiny_split), out=str(tmp_path / "a"), **kw),
          log=lambda s: None)
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1
    msgs: list[str] = []
    train(make_config(str(tiny_dataset), str(tiny_split), out=str(tmp_path / "b"), **kw),
          log=msgs.append)
    assert any("from cache" in m for m in msgs)
    # a different input size is a different cache entry
    kw["input_size"] = 48
    train(make_config(str(tiny_dataset), str(tiny_split), out=str(tmp_path / "c"), **kw),
          log=lambda s: None)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_training_is_reproducible(tiny_dataset, tiny_split, tmp_path):
    kw = dict(backbone="tiny", pretrained=False, input_size=32, epochs=5, views=2,
              cache_dir=str(tmp_path / "cache"), patience=0, finetune_blocks=2)
    a = train(make_config(str(tiny_dataset), str(tiny_split), out=str(tmp_path / "a"), **kw),
              log=lambda s: None)
    b = train(make_config(str(tiny_dataset), str(tiny_split), out=str(tmp_path / "b"), **kw),
              log=lambda s: None)
    assert (a / "history.csv").read_text() == (b / "history.csv").read_text()


def test_cosine_schedule_decays_every_rate_to_zero(tiny_dataset, tiny_split, tmp_path):
    """--schedule cosine: the head's and the fine-tuned top's rates fall to 0 by the last
    epoch; constant keeps them; a cosine run trains to a different result; a bad name is one
    clear error."""
    import torch

    from kulit.errors import DataError
    from kulit.training.train import scheduler

    cfg = make_config("d", "s.csv", epochs=4, schedule="cosine")
    opt = torch.optim.AdamW([{"params": [torch.zeros(1, requires_grad=True)], "lr": 1e-3},
                             {"params": [torch.zeros(1, requires_grad=True)], "lr": 3e-4}])
    sched = scheduler(cfg, opt)
    rates = []
    for _ in range(cfg.epochs):
        opt.step()
        sched.step()
        rates.append([g["lr"] for g in opt.param_groups])
    assert rates[0][0] < 1e-3 and rates[1][0] < rates[0][0]
    assert max(rates[-1]) < 1e-12
    assert scheduler(make_config("d", "s.csv"), opt) is None
    kw = dict(backbone="tiny", pretrained=False, input_size=32, epochs=4, views=2,
              cache_dir=str(tmp_path / "cache"), patience=0, finetune_blocks=0)
    a = train(make_config(str(tiny_dataset), str(tiny_split), out=str(tmp_path / "a"), **kw),
              log=lambda s: None)
    b = train(make_config(str(tiny_dataset), str(tiny_split), out=str(tmp_path / "b"),
                          schedule="cosine", **kw), log=lambda s: None)
    assert (a / "history.csv").read_text() != (b / "history.csv").read_text()
    with pytest.raises((DataError, ValueError), match="schedule"):
        make_config("d", "s.csv", schedule="warm")


def test_paper_recipe_defaults():
    cfg = make_config("d", "s.csv", "paper")
    assert (cfg.input_size, cfg.epochs, cfg.batch_size, cfg.lr, cfg.head) == (
        64, 32, 64, 1e-4, "paper")
    assert not cfg.tta and cfg.views == 1


def test_export_and_serve_parity(tiny_run: Path, tmp_path: Path, tiny_dataset: Path):
    model_dir = export(tiny_run, tmp_path / "model")
    card = json.loads((model_dir / "card.json").read_text())
    assert card["classes"] == TINY_CLASSES
    assert card["data"]["export_check"]["real_images"] is True
    pred = Predictor(model_dir)
    _, cfg, model = load_run(tiny_run)
    img_path = sorted((tiny_dataset / "Beta").glob("*.jpg"))[0]
    # training path: open_image + preprocess_image; serving path: Predictor.prepare
    x_train = preprocess_image(open_image(img_path, draft=64), cfg.preprocessing())
    _, x_serve = pred.prepare(img_path)
    np.testing.assert_array_equal(x_train, x_serve)
    with torch.no_grad():
        t_logits = model(torch.from_numpy(x_train[None]))[0].numpy()[0]
    first = pred.first_layer(img_path)
    assert first.shape == (16, 16, 16)  # tiny: 16 filters, stride 2 on 32 px
    p = pred.predict_one(img_path, heatmap=True)
    np.testing.assert_allclose(p.logits, t_logits, atol=1e-4)
    assert p.heatmap is not None
    assert p.label == "Beta"


def test_a_new_export_removes_files_made_from_the_old_model(tiny_run: Path, tmp_path: Path):
    """int8, gate, metrics and browser model are made from model.onnx: a re-export voids them."""
    from kulit.serving.model_dir import FILES, MODEL, derived_from

    DERIVED_FILES = [f for a in derived_from(MODEL) for f in FILES[a]]
    model_dir = export(tiny_run, tmp_path / "model")
    for name in DERIVED_FILES:
        (model_dir / name).write_bytes(b"from the previous model")
    (model_dir / "notes.txt").write_text("mine")
    export(tiny_run, model_dir)
    assert not any((model_dir / name).exists() for name in DERIVED_FILES)
    assert (model_dir / "notes.txt").read_text() == "mine"  # nothing else is touched
    assert Predictor(model_dir).precision == "fp32"


def test_export_refuses_a_missing_run(tmp_path):
    r = runner.invoke(app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "checkpoint" in r.output
    assert not (tmp_path / "m").exists()


def test_train_cli_bad_split(tmp_path):
    r = runner.invoke(app, ["train", "--data", str(tmp_path), "--split",
                            str(tmp_path / "missing.csv")])
    assert r.exit_code == 2
    assert r.output.count("\n") <= 2


@pytest.mark.slow
@pytest.mark.skipif(not SKIN8.is_dir(), reason="../shared/data/skin8 not present")
def test_paper_recipe_on_skin8_a_few_epochs(tmp_path):
    run_data(SKIN8, tmp_path / "data", seed=0)
    cfg = make_config(str(SKIN8), str(tmp_path / "data" / "split.csv"), "paper",
                      out=str(tmp_path / "run"), epochs=3, cache_dir=str(tmp_path / "cache"))
    run = train(cfg, log=lambda s: None)
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert len(rows) == 3
    assert float(rows[-1]["val_accuracy"]) > 1 / 8  # better than chance after 3 epochs


@pytest.mark.slow
def test_densenet201_with_a_users_weights_file(tiny_dataset, tiny_split, tmp_path):
    """The paper's backbone: a torchvision-style weights file loads, trains, exports."""
    from kulit.training.densenet import DenseNet

    torch.manual_seed(0)
    full = DenseNet(num_classes=1000)  # what torchvision.models.densenet201() would save
    weights = tmp_path / "densenet201.pth"
    torch.save(full.state_dict(), weights)
    cfg = make_config(str(tiny_dataset), str(tiny_split), "paper", out=str(tmp_path / "run"),
                      backbone="densenet201", weights=str(weights), epochs=2,
                      cache_dir=str(tmp_path / "cache"))
    run = train(cfg, log=lambda s: None)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["in_channels"] == 1920
    model_dir = export(run, tmp_path / "model")
    pred = Predictor(model_dir)
    p = pred.predict_one(sorted((tiny_dataset / "Alpha").glob("*.jpg"))[0])
    assert len(p.top) == 3
    assert pred.first_layer(sorted((tiny_dataset / "Alpha").glob("*.jpg"))[0]).shape[0] == 64


def test_ctrl_c_keeps_the_best_epoch_so_far(tiny_dataset, tiny_split, tmp_path, monkeypatch):
    import kulit.training.train as kt

    real, calls = kt.eval_logits, [0]

    def interrupt_on_third(model, feats):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return real(model, feats)

    monkeypatch.setattr(kt, "eval_logits", interrupt_on_third)
    cfg = make_config(str(tiny_dataset), str(tiny_split), out=str(tmp_path / "run"),
                      backbone="tiny", pretrained=False, input_size=32, epochs=50, views=2,
                      cache_dir=str(tmp_path / "cache"), finetune_blocks=0)
    run = train(cfg, log=lambda s: None)
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert len(rows) == 2  # epochs 1 and 2 finished; the third was interrupted
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["interrupted"] is True and ckpt["best_epoch"] in (1, 2)


def served_val_logits(run: Path, model_dir: Path, data: Path) -> tuple[dict, np.ndarray]:
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    pred = Predictor(model_dir)
    # split files are <folder>/<class>/<name>: they live beside the data folder
    files = [data.parent / f for f in ckpt["val_files"]]
    served = np.stack([p.logits for p in pred.predict(files)])
    return ckpt, served


def val_labels(ckpt: dict) -> np.ndarray:
    return np.array([ckpt["classes"].index(f.split("/")[1]) for f in ckpt["val_files"]])


def test_train_time_val_logits_are_the_served_logits(tiny_run, tiny_dataset, tmp_path):
    """What T and the threshold were fitted on is what the exported model serves (TTA too)."""
    model_dir = export(tiny_run, tmp_path / "model")
    ckpt, served = served_val_logits(tiny_run, model_dir, tiny_dataset)
    assert Predictor(model_dir).card.preprocessing.tta  # the kulit recipe serves the mirror
    # the fine-tuned top trains on half-precision cached inputs; the rest is the same path
    np.testing.assert_allclose(served, ckpt["val_logits"], atol=2e-3, rtol=0)
    card = Predictor(model_dir).card
    assert fit_temperature(served, val_labels(ckpt)) == pytest.approx(card.temperature, rel=1e-2)
    assert choose_threshold(served / card.temperature, val_labels(ckpt)) == card.threshold


def test_paper_head_calibrates_on_the_logits_it_serves(tiny_dataset, tiny_split, tmp_path):
    """The paper head is served without mirror TTA, so it must be evaluated without it."""
    cfg = make_config(str(tiny_dataset), str(tiny_split), "kulit", out=str(tmp_path / "run"),
                      backbone="tiny", pretrained=False, input_size=32, epochs=8, views=2,
                      head="paper", finetune_blocks=0, cache_dir=str(tmp_path / "cache"))
    assert cfg.tta and not cfg.preprocessing().tta
    run = train(cfg, log=lambda s: None)
    model_dir = export(run, tmp_path / "model")
    ckpt, served = served_val_logits(run, model_dir, tiny_dataset)
    np.testing.assert_allclose(served, ckpt["val_logits"], atol=1e-4, rtol=0)
    card = Predictor(model_dir).card
    assert not card.preprocessing.tta
    assert fit_temperature(served, val_labels(ckpt)) == pytest.approx(card.temperature, rel=1e-3)


def test_bad_training_values_are_one_clear_line(tiny_dataset, tiny_split):
    for option, value in (("--batch-size", "0"), ("--lr", "nan"), ("--lr", "-1"),
                          ("--dropout", "1"), ("--input-size", "0"), ("--threads", "0")):
        r = runner.invoke(app, ["train", "--data", str(tiny_dataset), "--split",
                                str(tiny_split), option, value])
        assert r.exit_code == 2, (option, r.output)
        assert "Traceback" not in r.output and option.lstrip("-").replace("-", "_") in r.output
