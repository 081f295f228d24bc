import pytest
import torch

from napari_twinvae.core.device import available_devices, select_device


def test_cpu_and_auto():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(torch.device("cpu")).type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    assert ("cpu", "CPU") in available_devices()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA"):
        select_device("cuda")


def test_unknown_device():
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_model_runs_on_cuda():
    from napari_twinvae.core import TwinVAE

    model = TwinVAE().to(select_device("cuda")).eval()
    with torch.no_grad():
        assert model.count(torch.rand(2, 1, 128, 128, device="cuda")).shape == (2,)
