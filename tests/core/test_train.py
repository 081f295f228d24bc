import dataclasses
import math

import numpy as np
import pytest
import torch

from napari_twinvae.core import loop as loop_module
from napari_twinvae.core import train as train_module
from napari_twinvae.core.batches import EpochData
from napari_twinvae.core.config import LossWeights, ModelConfig
from napari_twinvae.core.data import NaturalSet
from napari_twinvae.core.freezing import (
    CORE_PARTS,
    OUTER_PARTS,
    frozen_parameters,
    parameter_part,
    thaw_stage,
)
from napari_twinvae.core.intensity import Normalization
from napari_twinvae.core.io import CheckpointError, load_checkpoint, save_checkpoint
from napari_twinvae.core.jobs import drain
from napari_twinvae.core.model import Dropout, TwinVAE
from napari_twinvae.core.synthetic import SynthBatch, SynthConfig, generate
from napari_twinvae.core.train import (
    TrainConfig,
    Training,
    iter_train,
    learning_rate_at,
    train,
)
from napari_twinvae.core.trainset import StartModel
from napari_twinvae.core.validation import validation_split
from tests._checkpoints import TINY, tiny_train_config


def _natural(n=24, labeled=16, seed=0):
    """Synthetic frames standing in for natural ones: 3-10 cells, the first ``labeled`` labeled."""
    counts = np.random.default_rng(seed).integers(3, 11, n)
    images = generate(n, SynthConfig(), rng=seed, counts=counts).images
    mask = np.arange(n) < labeled
    return NaturalSet(images, np.where(mask, counts, 0), mask)


_config = tiny_train_config  # a short run of the tiny network on the CPU


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    """A small trained-looking checkpoint to transfer from."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("models") / "start.pt"
    save_checkpoint(path, TwinVAE(TINY))
    return path


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_config_round_trips_through_json():
    config = TrainConfig(
        init="/models/bf.pt",
        freeze="thaw",
        decoder=False,
        epochs=None,
        minutes=12.5,
        preset="bf",
        optimizer="radam",
        loss=LossWeights(reconstruction_kind="bce", reconstruction_decay=3e-5),
        model=TINY,
        seed=7,
    )
    assert TrainConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="no setting"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"freeze": "middle"}, "freeze strategy"),
        ({"init": "scratch", "freeze": "core"}, "needs a trained start model"),
        ({"epochs": None, "minutes": None}, "epoch limit"),
        ({"epochs": 0}, "at least 1"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"preset": "dic"}, "preset"),
        ({"schedule": "linear"}, "schedule"),
        ({"dropout": 1.0}, "dropout"),
        ({"seed": -1}, "seed"),
        ({"init": "/models/a.pt", "freeze": "counting", "decoder": False}, "decoders"),
    ],
)
def test_config_refuses_bad_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_validation_split_is_stratified_by_count():
    counts = np.repeat(np.arange(10), 5)
    natural = NaturalSet(np.zeros((50, 128, 128), np.float32), counts, np.ones(50, bool))
    held = validation_split(natural, 0.2, seed=3)
    assert held.size == 10
    assert sorted(counts[held].tolist()) == list(range(10))  # one of every count
    # a choice among epochs on fewer than MIN_HELD_OUT frames is noise: nothing is held out
    few = NaturalSet(np.zeros((45, 128, 128), np.float32), counts[:45], np.ones(45, bool))
    assert validation_split(few, 0.2).size == 0


@pytest.mark.usefixtures("hold_out_few")
def test_two_epochs_lower_the_validation_error_of_the_untrained_model():
    # a wider regressor learns the count range within a few steps, for every seed tried (0-7)
    learner = ModelConfig(
        encoder_channels=(4, 8, 8, 16), shared_channels=32, latent_dim=16, regressor_hidden=(32, 32)
    )
    result = train(_natural(n=32, labeled=28), _config(model=learner))
    untrained = result.history[0]["validation"]
    assert result.history[0]["epoch"] == 0 and untrained["n"] == 7
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert result.stopped == "finished" and result.epochs == 2
    assert result.best["epoch"] >= 1 and result.best["mae"] < untrained["mae"]
    assert not result.model.training
    assert next(result.model.parameters()).device.type == "cpu"
    assert all(p.is_contiguous() for p in result.model.parameters())  # as counting expects


def test_the_same_seed_gives_the_same_model_file_on_the_cpu(tmp_path):
    """Two runs of two epochs with one seed write the same weights and summary; another seed
    does not. (At a fixed number of threads: torch splits some sums by thread.)"""
    results, files = [], []
    for name, seed in (("first", 0), ("second", 0), ("other", 1)):
        training = Training(_natural(), _config(epochs=2, seed=seed))
        results.append(drain(training.run()))
        files.append(load_checkpoint(training.save(tmp_path / f"{name}.pt")))
    weights = [file.model.state_dict() for file in files]
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    assert not all(torch.equal(value, weights[2][key]) for key, value in weights[0].items())
    untimed = [{k: v for k, v in file.summary.items() if k != "seconds"} for file in files]
    assert untimed[0] == untimed[1] != untimed[2]
    assert results[0].history[2]["losses"] == results[1].history[2]["losses"]
    assert results[0].history[2]["losses"] != results[2].history[2]["losses"]


@pytest.mark.parametrize(
    ("capabilities", "wanted", "precision"),
    [
        ({"avx512_bf16": True}, True, "bfloat16 autocast"),
        ({"amx_bf16": True}, True, "bfloat16 autocast"),
        ({"avx2": True}, True, "float32"),  # emulated bfloat16 would be slower
        ({"avx512_bf16": True}, False, "float32"),
    ],
)
def test_cpu_training_uses_bfloat16_where_the_cpu_computes_it(
    monkeypatch, capabilities, wanted, precision
):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    result = train(_natural(), _config(epochs=1, mixed_precision=wanted))
    assert result.info["precision"] == precision
    assert result.stopped == "finished"
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_parts_cover_every_parameter():
    model = TwinVAE(dataclasses.replace(TINY, head="density"))  # every part, both heads
    names = [n for n, _ in model.named_parameters()]
    core = {n for n in names if parameter_part(n) == "core"}
    outer = {n for n in names if parameter_part(n) == "outer"}
    assert core | outer == set(names) and not core & outer
    assert {n.split(".")[0] for n in core} == set(CORE_PARTS)
    assert {n.split(".")[0] for n in outer} == set(OUTER_PARTS)


@pytest.mark.parametrize("freeze", ["none", "core", "outer"])
def test_freezing_leaves_exactly_the_frozen_parameters_unchanged(freeze, start_model):
    before = load_checkpoint(start_model).model
    config = _config(init=str(start_model), freeze=freeze, epochs=1, validation_share=0.0)
    result = train(_natural(), config)  # no validation: the last model is kept
    assert "too few" in result.selection or "last epoch" in result.selection
    after = result.model.state_dict()
    for name, param in before.named_parameters():
        unchanged = torch.equal(param, after[name])
        assert unchanged == (freeze != "none" and parameter_part(name) == freeze), name
    for name, buffer in before.named_buffers():  # frozen batch norms keep their statistics
        if name.endswith("running_mean"):
            kept = torch.equal(buffer, after[name])
            assert kept == (freeze != "none" and parameter_part(name) == freeze), name


def test_counting_freeze_trains_only_the_decoders_and_keeps_every_count(start_model):
    before = load_checkpoint(start_model).model.eval()
    images = torch.from_numpy(_natural().frames[:, None])
    with torch.no_grad():
        counts_before = before.count(images)
    config = _config(init=str(start_model), freeze="counting", epochs=2)
    result = train(_natural(), config)
    after = result.model.state_dict()
    for name, param in before.named_parameters():
        decoding = name.split(".")[0] in ("decoders", "shared_decoder", "expand")
        assert torch.equal(param, after[name]) != decoding, name
    assert result.best["epoch"] == 2  # every epoch ties on counts: the last decoders are kept
    with torch.no_grad():
        assert torch.equal(result.model.count(images), counts_before)


def test_density_freeze_trains_all_but_the_density_path_and_keeps_every_count(tmp_path):
    """Behind a density head the code, the regressor and the decoders learn (working decoders
    for the model's views) while every count of the head stays exactly as it was."""
    torch.manual_seed(2)
    path = tmp_path / "density.pt"
    save_checkpoint(path, TwinVAE(dataclasses.replace(TINY, head="density")))
    before = load_checkpoint(path).model.eval()
    natural = _natural()
    images = torch.from_numpy(natural.frames[:, None])
    with torch.no_grad():
        counts_before = before.count(images)
    result = train(natural, _config(init=str(path), freeze="density", epochs=2))
    after = result.model.state_dict()
    for name, param in before.named_parameters():
        parts = name.split(".")
        reads = parts[0] == "density_head" or (parts[0] == "encoders" and int(parts[2]) < 9)
        assert torch.equal(param, after[name]) == reads, name
    with torch.no_grad():
        assert torch.equal(result.model.count(images), counts_before)


def test_density_freeze_needs_a_density_head_and_the_decoders():
    with pytest.raises(ValueError, match="has none"):
        frozen_parameters(TwinVAE(dataclasses.replace(TINY, head="regressor")), "density")
    with pytest.raises(ValueError, match="decoders"):
        _config(init="/models/a.pt", freeze="density", decoder=False)


def test_cosine_schedule_warms_up_then_falls_to_its_floor():
    constant = _config()
    assert learning_rate_at(constant, 0.0) == learning_rate_at(constant, 0.9) == 3e-3
    cosine = _config(schedule="cosine")
    rates = [learning_rate_at(cosine, f) for f in np.linspace(0, 1, 101)]
    assert rates[0] == pytest.approx(3e-4)  # a tenth at the start
    peak = int(np.argmax(rates))
    assert peak == 3 and rates[peak] == pytest.approx(3e-3, rel=1e-2)
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1 :], strict=False))
    assert rates[-1] == pytest.approx(3e-3 * train_module.COSINE_FLOOR)


def test_a_dropout_override_holds_for_the_run_only(start_model, monkeypatch):
    rates_in_training = set()
    real = Dropout.forward

    def spy(self, x):
        if self.training:
            rates_in_training.add(self.p)
        return real(self, x)

    monkeypatch.setattr(Dropout, "forward", spy)
    result = train(_natural(), _config(init=str(start_model), dropout=0.0, epochs=1))
    assert rates_in_training == {0.0}
    rates = {m.p for m in result.model.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {TINY.dropout}  # the saved model keeps the rate it is built with


@pytest.mark.parametrize("freeze", ["core", "outer", "thaw", "counting", "density"])
def test_every_freeze_strategy_trains_a_model_with_a_density_head(freeze):
    """The shipped model counts with a density head: every strategy the dock and train offer
    must place it (shared by both twins, so a core part, thawed first with the regressor)."""
    model = TwinVAE(dataclasses.replace(TINY, head="density"))
    frozen = frozen_parameters(model, freeze, 0.0)
    head = {n for n, _ in model.named_parameters() if n.startswith("density_head.")}
    assert head and (head <= frozen) == (freeze in ("core", "counting", "density"))


def test_thaw_unfreezes_in_five_stages_from_the_inside_out(start_model):
    model = TwinVAE(TINY)
    names = {n for n, _ in model.named_parameters()}
    frozen = [frozen_parameters(model, "thaw", f) for f in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    assert names - frozen[0] == {
        n for n in names if n.split(".")[0] in ("regressor", "mu", "logvar", "expand")
    }
    for earlier, later in zip(frozen[:4], frozen[1:5], strict=True):
        assert later < earlier  # each stage unfreezes more
    assert frozen[4] == frozen[5] == set()
    assert thaw_stage("encoders.natural.9.weight") == 2  # last encoder convolution
    assert thaw_stage("decoders.synthetic.0.weight") == 2  # first decoder block
    assert thaw_stage("encoders.natural.0.weight") == 4  # the image side trains last
    assert thaw_stage("decoders.natural.12.weight") == 4

    # a run of 5 epochs, stopped after the first: only the innermost layers have moved
    before = load_checkpoint(start_model).model
    config = _config(init=str(start_model), freeze="thaw", epochs=5, validation_share=0.0)
    training = Training(_natural(), config)
    gen = training.run()
    for progress in gen:
        if progress.epoch == 1 and progress.epoch_end:
            gen.close()
    after = training.result.model.state_dict()
    for name, param in before.named_parameters():
        assert torch.equal(param, after[name]) == (thaw_stage(name) > 0), name


def test_decoder_free_training_never_runs_a_decoder(start_model, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a decoder ran")

    monkeypatch.setattr(TwinVAE, "decode", boom)
    monkeypatch.setattr(torch.nn.ConvTranspose2d, "forward", boom)
    before = load_checkpoint(start_model).model
    result = train(_natural(), _config(init=str(start_model), decoder=False, epochs=1))
    for twin in ("natural", "synthetic"):
        assert result.history[1]["losses"][twin]["reconstruction"] == 0.0
    decoder_names = [n for n, _ in before.named_parameters() if "decoder" in n]
    assert decoder_names
    for name in decoder_names:
        assert torch.equal(before.state_dict()[name], result.model.state_dict()[name])


def test_decoder_free_training_needs_labels(start_model):
    unlabeled = _natural(labeled=0)
    with pytest.raises(ValueError, match="label some frames"):
        train(unlabeled, _config(init=str(start_model), decoder=False))


def test_closing_the_generator_keeps_the_best_model_so_far():
    training = Training(_natural(), _config(epochs=3))
    gen = training.run()
    seen = []
    for progress in gen:
        seen.append(progress)
        if progress.epoch == 1 and progress.step == 2 and not progress.epoch_end:
            gen.close()  # Stop in the middle of epoch 2
    result = training.result
    assert result is not None and result.stopped == "cancelled"
    assert result.epochs == 1 and result.best["epoch"] in (0, 1)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert not result.model.training
    with torch.no_grad():
        assert result.model.count(torch.rand(2, 1, 128, 128)).shape == (2,)
    # progress came after every batch, so Stop waited for at most one batch
    assert seen[1].step == 1 and seen[1].steps_per_epoch > 2


def test_a_huge_learning_rate_diverges_and_keeps_the_best_model():
    natural = _natural()
    result = train(natural, _config(learning_rate=1e4, epochs=3))
    assert result.stopped.startswith("diverged: ")
    assert any("diverged" in m for m in result.messages)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert result.best["epoch"] == 0  # nothing after the start was better


def _poison_loss(monkeypatch, bad):
    """twin_loss whose KLD is NaN on the calls for which ``bad(call)`` holds (1-based)."""
    real = loop_module.twin_loss
    calls = []

    def poisoned(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls.append(1)
        return terms._replace(kld=torch.tensor(float("nan"))) if bad(len(calls)) else terms

    monkeypatch.setattr(loop_module, "twin_loss", poisoned)


def test_a_batch_with_a_non_finite_loss_is_skipped_and_the_run_goes_on(monkeypatch):
    _poison_loss(monkeypatch, lambda call: call == 8)  # once, in the second epoch
    result = train(_natural(), _config(epochs=3))
    assert result.stopped == "finished" and result.epochs == 3
    assert result.info["skipped_steps"] == 1
    assert any("skipped a batch: the loss became non-finite (kld)" in m for m in result.messages)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


@pytest.mark.usefixtures("hold_out_few")
def test_a_loss_that_stays_non_finite_stops_with_a_clear_reason(monkeypatch):
    _poison_loss(monkeypatch, lambda call: call >= 8)
    result = train(_natural(), _config(epochs=3))
    assert result.stopped.startswith(
        "diverged: the loss became non-finite (kld) in 4 batches in a row in epoch 2"
    )
    assert result.epochs == 1 and result.best["epoch"] in (0, 1)
    kept = result.history[result.best["epoch"]]["validation"]
    assert result.best["mae"] == kept["mae"]


def test_a_non_finite_gradient_in_the_natural_decoder_is_skipped(monkeypatch):
    """The former failure: a transfer with decoders on stopped as soon as one step of the
    natural twin left a non-finite value in its decoder (the next natural batch's
    reconstruction loss was NaN, its KLD finite). Such a step is now skipped, so no weight ever
    takes the value in, and the run goes on."""
    model = TwinVAE(TINY)
    last = model.decoders["natural"][-2]  # the transposed convolution to the image
    shots = []

    def poison(grad):
        shots.append(1)
        return torch.full_like(grad, float("nan")) if len(shots) == 2 else grad

    last.weight.register_hook(poison)
    start = StartModel(model, Normalization(), {"init": "scratch"})
    result = drain(Training(_natural(), _config(epochs=3), start=start).run())
    assert result.stopped == "finished" and result.info["skipped_steps"] == 1
    assert any(
        "a gradient became non-finite (decoders.natural.12.weight)" in m for m in result.messages
    )
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_few_labels_keep_the_last_model_and_say_so():
    result = train(_natural(labeled=3), _config(epochs=1))
    assert result.best["on"] == "training labels" and result.best["epoch"] == 1
    assert result.best["n"] == 3
    assert "too few labeled frames" in result.selection
    assert any("only 3 labeled" in m for m in result.messages)


def test_a_time_budget_stops_the_run(monkeypatch):
    result = train(_natural(), _config(epochs=None, minutes=1e-6))
    assert result.stopped == "time budget"
    assert result.history[-1].get("partial_steps") == 1 and result.epochs == 1


def test_regressor_delay_holds_back_the_count_term_from_scratch():
    result = train(_natural(), _config(epochs=2, regressor_delay=1))
    assert result.history[1]["losses"]["natural"]["regression"] == 0.0
    assert result.history[2]["losses"]["natural"]["regression"] > 0.0


@pytest.mark.usefixtures("hold_out_few")
def test_progress_reports_losses_per_twin_and_time():
    progress = list(iter_train(_natural(), _config(epochs=1)))
    ends = [p for p in progress if p.epoch_end]
    assert [p.epoch for p in ends] == [0, 1]
    last = ends[-1]
    assert last.step == last.steps_per_epoch and last.validation["n"] == 4
    for twin in ("natural", "synthetic"):
        assert set(last.losses[twin]) == {"total", "reconstruction", "regression", "kld", "density"}
        assert math.isfinite(last.losses[twin]["total"])
    assert last.remaining_s == 0.0 and last.elapsed_s > 0


@pytest.mark.usefixtures("hold_out_few")
def test_saved_model_carries_the_summary(tmp_path):
    training = Training(_natural(), _config(epochs=1))
    for _ in training.run():
        pass
    path = training.save(tmp_path / "model.pt")
    loaded = load_checkpoint(path)
    summary = loaded.summary
    assert TrainConfig.from_dict(summary["config"]) == training.config
    assert summary["stopped"] == "finished" and summary["epochs"] == 1
    assert summary["best"]["epoch"] == training.result.best["epoch"]
    assert summary["seconds"] > 0 and summary["labeled"] == {"training": 12, "validation": 4}
    for key, value in training.result.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)


def test_a_summary_names_the_start_model_without_its_folder(start_model):
    result = train(_natural(), _config(init=str(start_model), epochs=1))
    summary = result.summary()
    assert summary["init"] == summary["config"]["init"] == start_model.name
    assert str(start_model.parent) not in repr(summary)
    assert result.config.init == str(start_model)  # the run itself read the file where it lay


def test_the_default_model_is_missing_in_one_line(monkeypatch, tmp_path):
    from napari_twinvae.core import io

    monkeypatch.setattr(io, "default_model_path", lambda: tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="no default model"):
        train(_natural(), TrainConfig())


class _ConstantScenes:
    """A renewal source of flat frames, recording what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def batch(self, n, epoch):
        self.calls.append((n, epoch))
        flat = np.full((n, 128, 128), 0.5, np.float32)
        return SynthBatch(flat, np.full(n, 7, np.int64), np.zeros((0, 3)))

    def describe(self):
        return {"rendering": "flat"}


@pytest.mark.usefixtures("hold_out_few")
def test_renewal_replaces_the_training_frames_from_the_second_epoch_only(monkeypatch):
    natural = _natural()
    before = natural.frames.copy()
    renew = _ConstantScenes()
    seen = []  # (epoch of the last renewal, natural batch)
    original = EpochData.batch

    def recording(data, domain, index):
        batch = original(data, domain, index)
        if domain == "natural":
            calls = renew.calls[-1][1] if renew.calls else 1
            seen.append((calls, batch.x.clone(), batch.counts.clone()))
        return batch

    monkeypatch.setattr(EpochData, "batch", recording)
    validated = []  # whether each validation saw the original held-out frames
    measure = loop_module.measure

    def checking(model, frames, counts, index):
        validated.append(np.array_equal(frames[torch.from_numpy(index)].numpy(), before[index]))
        return measure(model, frames, counts, index)

    monkeypatch.setattr(loop_module, "measure", checking)
    training = Training(natural, _config(decoder=False, epochs=3), renew=renew)
    result = drain(training.run())
    trained = int(natural.labeled.sum()) - len(result.info["validation_frames"])
    assert renew.calls == [(trained, 2), (trained, 3)]
    assert result.info["renewed"] == {"rendering": "flat"}
    assert np.array_equal(natural.frames, before)  # the caller's frames are left as they were
    assert len(validated) == 4 and all(validated)  # epochs 0-3
    for epoch, x, counts in seen:
        assert bool((x - 0.5).abs().max() < 0.1) == (epoch > 1)
        assert bool((counts == 7).all()) == (epoch > 1)
