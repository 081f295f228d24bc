import pytest
import torch

from napari_twinvae.core import DOMAINS, ModelConfig, TwinVAE


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TwinVAE(ModelConfig())


def test_default_config_is_the_papers_network(model):
    assert sum(p.numel() for p in model.parameters()) == 11_363_331


@pytest.mark.parametrize("domain", DOMAINS)
def test_forward_shapes(model, domain):
    with torch.no_grad():
        out = model.train()(torch.rand(4, 1, 128, 128), domain)
    assert out.reconstruction.shape == (4, 1, 128, 128)
    assert out.mu.shape == (4, 256) and out.logvar.shape == (4, 256)
    assert out.count.shape == (4,)
    assert float(out.reconstruction.min()) >= 0.0 and float(out.reconstruction.max()) <= 1.0


def test_eval_mode_uses_mu_and_is_deterministic(model):
    model.eval()
    x = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        first, second = model(x, "natural"), model(x, "natural")
        assert torch.equal(first.count, second.count)
        assert torch.equal(first.reconstruction, second.reconstruction)
        # z is mu: the count equals the regressor applied to mu.
        assert torch.allclose(first.count, model.regress(first.mu))
        assert torch.equal(model.reparameterize(first.mu, first.logvar), first.mu)


def test_training_mode_samples(model):
    model.train()
    mu, logvar = torch.zeros(2, 256), torch.zeros(2, 256)
    torch.manual_seed(1)
    assert not torch.equal(model.reparameterize(mu, logvar), mu)


def test_count_path_equals_full_forward_and_skips_decoders(model, monkeypatch):
    model.eval()
    x = torch.rand(5, 1, 128, 128)
    with torch.no_grad():
        full = model(x, "natural").count

        def boom(*args, **kwargs):
            raise AssertionError("a decoder ran while counting")

        for part in (model.decoders["natural"], model.decoders["synthetic"], model.shared_decoder):
            monkeypatch.setattr(part, "forward", boom)
        assert torch.allclose(model.count(x), full, atol=1e-5)
        assert model(x, "natural", decode=False).reconstruction is None


def test_the_latent_code_and_count_stay_float32_under_autocast(model):
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(2, 1, 128, 128), "natural")
    assert out.reconstruction.dtype == torch.bfloat16  # the convolutions ran in bfloat16
    assert out.mu.dtype == out.logvar.dtype == out.count.dtype == torch.float32


def test_twins_share_inner_layers_but_not_outer(model):
    model.eval()
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        natural, synthetic = model(x, "natural"), model(x, "synthetic")
    assert not torch.allclose(natural.mu, synthetic.mu)
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert {"encoders", "decoders", "shared_encoder", "mu", "logvar", "regressor"} <= names


def test_convolutions_are_orthogonal():
    conv = TwinVAE().encoders["natural"][3]  # 32 -> 64, 5x5
    w = conv.weight.detach().reshape(conv.weight.shape[0], -1)
    assert torch.allclose(w @ w.T, torch.eye(w.shape[0]), atol=1e-4)
    assert torch.count_nonzero(conv.bias) == 0


def test_bad_domain_and_shape_are_refused(model):
    with pytest.raises(ValueError, match="domain"):
        model(torch.rand(1, 1, 128, 128), "phase")
    with pytest.raises(ValueError, match="128"):
        model(torch.rand(1, 1, 64, 64), "natural")


def test_config_json_round_trip():
    cfg = ModelConfig(
        encoder_channels=(8, 16, 32, 64),
        shared_channels=64,
        latent_dim=16,
        regressor_hidden=(16, 8),
    )
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg and isinstance(again.encoder_channels, tuple)
    small = TwinVAE(again)
    assert small(torch.rand(2, 1, 128, 128), "synthetic").count.shape == (2,)
    with pytest.raises(ValueError, match="no setting"):
        ModelConfig.from_dict({"latent": 3})
