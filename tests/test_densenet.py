"""DenseNet-201 without torchvision: key names, Keras parameter counts, weight loading, heads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from kulit.errors import ModelError
from kulit.training.densenet import (
    DENSENET201_OUT_CHANNELS,
    DenseNet,
    build_densenet201,
    keras_param_count,
    load_torchvision_state_dict,
)
from kulit.training.heads import LinearHead, PaperHead

# Published numbers, not derived from our code.
KERAS_DENSENET201_NO_TOP = 18_321_984  # keras.applications.DenseNet201(include_top=False)
KERAS_DENSENET201_WITH_TOP = 20_242_984  # keras.applications.DenseNet201()
TORCHVISION_DENSENET201_PARAMS = 20_013_928  # torchvision DenseNet201_Weights num_params
PAPER_TOTAL, PAPER_TRAINABLE = 18_576_584, 250_760  # the paper's Keras model.summary()

# Keys as they appear in torchvision's densenet201 state_dict.
TORCHVISION_KEYS = [
    "features.conv0.weight",
    "features.norm0.running_mean",
    "features.denseblock1.denselayer1.norm1.weight",
    "features.denseblock1.denselayer6.conv2.weight",
    "features.denseblock3.denselayer48.norm2.num_batches_tracked",
    "features.denseblock4.denselayer32.conv2.weight",
    "features.transition1.norm.bias",
    "features.transition3.conv.weight",
    "features.norm5.running_var",
    "classifier.weight",
    "classifier.bias",
]


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Give BatchNorm non-trivial affine and running stats so a weight round trip is tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model


@pytest.fixture(scope="module")
def base() -> DenseNet:
    return build_densenet201().eval()


@pytest.fixture(scope="module")
def source() -> DenseNet:
    """A full torchvision-layout densenet201 (with a 1000-class classifier), seeded."""
    torch.manual_seed(0)
    return _randomise(DenseNet(num_classes=1000), seed=1).eval()


@pytest.fixture(scope="module")
def source_file(source: DenseNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "densenet201.pth"
    torch.save(source.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def test_state_dict_keys_match_torchvision_names(source: DenseNet, base: DenseNet) -> None:
    keys = set(source.state_dict())
    for key in TORCHVISION_KEYS:
        assert key in keys, key
    assert not any(re.search(r"denselayer\d+\.(norm|conv)\.", k) for k in keys)
    assert "features.denseblock3.denselayer49.conv1.weight" not in keys  # block 3 has 48 layers
    # The backbone is exactly the torchvision model minus the classifier.
    assert set(base.state_dict()) == {k for k in keys if not k.startswith("classifier.")}
    assert source.state_dict()["classifier.weight"].shape == (1000, 1920)


def test_parameter_counts_match_published_numbers(source: DenseNet, base: DenseNet) -> None:
    assert sum(p.numel() for p in source.parameters()) == TORCHVISION_DENSENET201_PARAMS
    assert keras_param_count(source)[0] == KERAS_DENSENET201_WITH_TOP
    assert keras_param_count(base)[0] == KERAS_DENSENET201_NO_TOP
    assert base.out_channels == DENSENET201_OUT_CHANNELS == 1920


def test_paper_model_counts_with_frozen_base() -> None:
    frozen = build_densenet201().requires_grad_(False)
    model = nn.Sequential(frozen, PaperHead(1920, 8))
    assert keras_param_count(model) == (PAPER_TOTAL, PAPER_TRAINABLE)
    # Unfrozen, Keras would call everything trainable except BatchNorm moving statistics.
    frozen.requires_grad_(True)
    total, trainable = keras_param_count(model)
    assert total == PAPER_TOTAL
    assert trainable == sum(p.numel() for p in model.parameters()) < total


def test_keras_count_includes_running_stats_only() -> None:
    # Keras BatchNormalization(10): gamma, beta trainable; moving mean/var not; no counter.
    assert keras_param_count(nn.BatchNorm2d(10)) == (40, 20)
    assert keras_param_count(PaperHead(1920, 8)) == (4 * 1920 + 245_888 + 1_032, 250_760)
    shared = nn.Linear(3, 3)
    assert keras_param_count(nn.Sequential(shared, shared)) == (12, 12)


def test_feature_map_shape_at_64px(base: DenseNet, image: torch.Tensor) -> None:
    with torch.no_grad():
        out = base(image)
    assert out.shape == (1, 1920, 2, 2)
    assert out.min() >= 0  # ReLU after norm5, as torchvision applies before pooling


def test_full_model_returns_imagenet_logits(source: DenseNet, image: torch.Tensor) -> None:
    with torch.no_grad():
        assert source(image).shape == (1, 1000)


def test_weights_round_trip(
    source: DenseNet, source_file: Path, base: DenseNet, image: torch.Tensor
) -> None:
    loaded = build_densenet201(weights=source_file).eval()
    assert loaded.classifier is None
    with torch.no_grad():
        expected = torch.relu(source.features(image))
        assert torch.equal(loaded(image), expected)
        assert not torch.allclose(base(image), expected)  # a fresh model really differs


def test_old_torchvision_key_pattern_is_remapped(
    source: DenseNet, tmp_path: Path, image: torch.Tensor
) -> None:
    # Like the original densenet201-c1103571.pth: 'norm.1' keys and no num_batches_tracked.
    old = {}
    for key, value in source.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        old[re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)] = value
    assert "features.denseblock4.denselayer32.conv.2.weight" in old
    path = tmp_path / "old.pth"
    torch.save(old, path)
    loaded = build_densenet201(weights=path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(image), torch.relu(source.features(image)))
    assert int(loaded.features.norm5.num_batches_tracked) == 0


def test_missing_file_is_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        build_densenet201(weights=tmp_path / "nope.pth")


def test_garbage_file_is_model_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(ModelError, match="not a torch state dict"):
        build_densenet201(weights=path)


def test_whole_pickled_module_is_refused_by_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), path)  # torch.save(model) instead of model.state_dict()
    with pytest.raises(ModelError, match="pickled Python objects"):
        build_densenet201(weights=path)


@pytest.mark.parametrize(
    "obj, message",
    [
        ([torch.zeros(1)], "holds a list"),
        ({"state_dict": {"a": torch.zeros(1)}, "epoch": 3}, "training checkpoint"),
        ({}, "holds a dict"),
    ],
)
def test_non_state_dict_is_model_error(obj: object, message: str, tmp_path: Path) -> None:
    path = tmp_path / "obj.pth"
    torch.save(obj, path)
    with pytest.raises(ModelError, match=message):
        build_densenet201(weights=path)


def test_missing_key_is_named(source: DenseNet, tmp_path: Path) -> None:
    state = dict(source.state_dict())
    del state["features.transition3.conv.weight"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"1 missing keys: features\.transition3\.conv\.weight"):
        build_densenet201(weights=path)


def test_wrong_shape_and_unexpected_keys_are_named(source: DenseNet) -> None:
    state = dict(source.state_dict())
    state["features.norm5.weight"] = torch.ones(1024)  # e.g. densenet121 weights
    state["module.extra"] = torch.zeros(1)
    model = DenseNet()
    with pytest.raises(ModelError) as info:
        load_torchvision_state_dict(model, state)
    assert "features.norm5.weight (1024,) != (1920,)" in info.value.message
    assert "1 unexpected keys: module.extra" in info.value.message
    assert "missing" not in info.value.message


def test_densenet121_weights_do_not_fit(tmp_path: Path) -> None:
    small = DenseNet(block_config=(6, 12, 24, 16))  # torchvision densenet121 layout
    with pytest.raises(ModelError, match="missing keys: .*denseblock3.denselayer25"):
        load_torchvision_state_dict(DenseNet(), small.state_dict())


def test_paper_head_returns_logits() -> None:
    torch.manual_seed(0)
    head = PaperHead(16, 8, hidden=4, dropout=0.5)
    assert [name for name, _ in head.named_children()] == ["bn", "fc1", "relu", "drop", "fc2"]
    assert head.fc1.in_features == 16 and head.fc2.out_features == 8
    x = torch.randn(3, 16, 2, 2)
    head.eval()
    with torch.no_grad():
        out = head(x)
        assert out.shape == (3, 8)
        assert torch.equal(out, head(x))  # dropout is off in eval
        assert not torch.allclose(out.softmax(1).sum(1), out.sum(1))  # logits, not probabilities
        # Eval BatchNorm commutes with average pooling: the head sees pooled features only.
        pooled = head.bn(x.mean(dim=(2, 3), keepdim=True)).flatten(1)
        assert torch.allclose(out, head.fc2(torch.relu(head.fc1(pooled))), atol=1e-6)


def test_linear_head_is_gap_dropout_fc() -> None:
    head = LinearHead(16, 8, dropout=0.2).eval()
    x = torch.randn(2, 16, 3, 3)
    with torch.no_grad():
        assert torch.allclose(head(x), head.fc(x.mean(dim=(2, 3))))
    assert head(x).shape == (2, 8)
    assert head.drop.p == 0.2
