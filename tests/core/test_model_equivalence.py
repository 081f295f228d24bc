"""The model's faster computations equal the layers they stand for."""

import torch
import torch.nn.functional as F

from napari_twinvae.core.model import Dropout, TwinVAE


def test_shared_layers_as_matrix_products_equal_the_convolutions():
    torch.manual_seed(0)
    model = TwinVAE().eval()
    x = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        h = model.encoders["natural"](x)
        by_conv = model.shared_encoder(h).flatten(1)
        assert torch.allclose(model._features(x, "natural"), by_conv, atol=1e-5)
        z = torch.randn(3, 256)
        up = model.expand(z).view(3, -1, 1, 1)
        by_conv = model.decoders["synthetic"](model.shared_decoder(up))
        assert torch.allclose(model.decode(z, "synthetic"), by_conv, atol=1e-5)


def test_state_dict_layout_is_unchanged():
    keys = list(TwinVAE().state_dict())
    assert "shared_encoder.0.weight" in keys and "shared_decoder.0.weight" in keys
    assert TwinVAE().state_dict()["shared_encoder.0.weight"].shape == (512, 256, 5, 5)


def test_cpu_dropout_keeps_the_share_and_the_scale_of_torch_dropout():
    drop = Dropout(0.1).train()
    torch.manual_seed(0)
    x = torch.ones(400_000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(float(kept.float().mean()) - 0.9) < 0.002
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.9))
    y.sum().backward()  # the gradient passes exactly where the value did
    assert torch.equal(x.grad != 0, kept)
    reference = F.dropout(torch.ones(400_000), 0.1, True)
    assert abs(float((reference != 0).float().mean()) - float(kept.float().mean())) < 0.003
    assert torch.equal(drop.eval()(x), x)
