import pathlib
import pickle

import pytest
import torch

from napari_twinvae.core import (
    CheckpointError,
    TwinVAE,
    load_checkpoint,
    save_checkpoint,
)
from napari_twinvae.core.intensity import Normalization
from napari_twinvae.core.io import atomic_write
from tests._checkpoints import SMALL


def test_round_trip_keeps_weights_config_and_summary(tmp_path):
    torch.manual_seed(0)
    model = TwinVAE(SMALL)
    path = save_checkpoint(
        tmp_path / "model.pt",
        model,
        summary={"epochs": 3, "mae": 0.5},
        normalization=Normalization(mode="fixed", low=0, high=4095),
    )
    loaded = load_checkpoint(path)
    assert loaded.config == SMALL
    assert loaded.summary == {"epochs": 3, "mae": 0.5}
    assert loaded.normalization.high == 4095
    assert {"napari_twinvae", "torch"} <= set(loaded.versions)
    assert not loaded.model.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
    assert not list(tmp_path.glob(".*.part"))  # the temporary file was renamed into place


def test_half_precision_file_loads_as_float32(tmp_path):
    model = TwinVAE(SMALL)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "half.pt", model, half=True))
    weight = loaded.model.state_dict()["mu.0.weight"]
    assert weight.dtype == torch.float32
    assert torch.allclose(weight, model.state_dict()["mu.0.weight"], atol=1e-3)


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", TwinVAE(SMALL))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": TwinVAE(SMALL).state_dict()}, foreign)
    with pytest.raises(CheckpointError, match="another program"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(text)
    assert "\n" not in str(err.value)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", TwinVAE(SMALL))
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["latent_dim"] = 12
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


class _Payload:
    """A pickle that would create a file when unpickled by an unsafe loader."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_a_pickle_that_carries_code_is_refused_and_never_run(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": "napari-twinvae-checkpoint", "evil": _Payload(marker)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "counts.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as f:
        f.write("half-written")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_the_shipped_default_model_loads_in_float32_and_counts(tmp_path, monkeypatch):
    from napari_twinvae.core.io import (
        CheckpointError,
        default_model_path,
        load_model,
        resolve_model,
    )
    from napari_twinvae.core.predict import count
    from napari_twinvae.core.synthetic import synthetic_timeseries

    assert resolve_model(tmp_path / "m.pt") == tmp_path / "m.pt"
    assert resolve_model("default") == default_model_path() and default_model_path().is_file()
    shipped = load_model("default")
    assert all(p.dtype == torch.float32 for p in shipped.model.parameters())
    assert shipped.summary["config"]["seed"] is not None  # every model says how it was made
    sample = synthetic_timeseries("pc", 4, seed=0)
    result = count(sample.images, shipped)
    assert result.counts.shape == (4, 1) and (result.counts >= 0).all()
    monkeypatch.setattr("napari_twinvae.core.io.default_model_path", lambda: tmp_path / "no.pt")
    with pytest.raises(CheckpointError, match="no default model"):
        resolve_model("default")


def test_loading_runs_no_random_initialisation(tmp_path, monkeypatch):
    # found on a new-user walk: every load first ran the orthogonal initialisation it then
    # overwrote (12.5 s of a 15.5 s Count click on a busy 2-core machine)
    torch.manual_seed(0)
    model = TwinVAE(SMALL)
    path = save_checkpoint(tmp_path / "model.pt", model)
    real = []  # initialisations that computed values (on torch's meta device they cost nothing)
    initialise = torch.nn.init.orthogonal_
    monkeypatch.setattr(
        torch.nn.init,
        "orthogonal_",
        lambda tensor, *a, **k: tensor if tensor.is_meta else real.append(initialise(tensor)),
    )
    loaded = load_checkpoint(path)
    assert real == []
    tensors = [*loaded.model.parameters(), *loaded.model.buffers()]
    assert not any(t.is_meta for t in tensors)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
    x = torch.rand(2, 1, 128, 128)
    assert torch.equal(loaded.model.count(x), model.eval().count(x))


def test_settings_that_cannot_build_a_model_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", TwinVAE(SMALL))
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["encoder_channels"] = [4.5, 8, 8, 16]
    torch.save(payload, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="damaged checkpoint settings"):
        load_checkpoint(tmp_path / "odd.pt")
    payload["model_config"]["encoder_channels"] = [4, 8, 8, 16]
    payload["normalization"] = {"mode": "fixed", "low": float("-inf"), "high": 1.0}
    torch.save(payload, tmp_path / "inf.pt")
    with pytest.raises(CheckpointError, match="finite"):
        load_checkpoint(tmp_path / "inf.pt")


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("leaky_slope", "", "ModelConfig.leaky_slope must be a number, got ''"),
        ("logvar_max", None, "ModelConfig.logvar_max must be a number, got None"),
        ("latent_dim", True, "ModelConfig.latent_dim must be a whole number, got True"),
        ("encoder_channels", "4888", "ModelConfig.encoder_channels must be a list"),
    ],
)
def test_settings_of_the_wrong_type_are_refused_by_name(tmp_path, key, value, said):
    # found by fuzzing the Label & train dock: a slope stored as text built a model whose first
    # pass failed inside torch (a TypeError in the dock; count blamed the image for it)
    payload = torch.load(save_checkpoint(tmp_path / "m.pt", TwinVAE(SMALL)), weights_only=True)
    payload["model_config"][key] = value
    torch.save(payload, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=f"damaged checkpoint settings \\({said}"):
        load_checkpoint(tmp_path / "odd.pt")
