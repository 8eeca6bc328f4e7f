"""The signal model: features, generated data, training and the model file."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gekko.signals import model as model_file
from gekko.signals import synthetic
from gekko.signals.features import FEATURES, WINDOW, PriceWindowError, from_prices
from gekko.signals.features import request_features as features_of
from gekko.signals.train import TrainConfig, accuracy, train


def test_features_are_scale_free_log_returns():
    prices = [100 * 1.01**i for i in range(WINDOW)]
    row = features_of(prices)
    assert row.shape == (FEATURES,) and row.dtype == torch.float32
    # A price level or a unit change (cents vs dollars) does not change what the model sees.
    assert torch.allclose(row, features_of([p * 1000 for p in prices]))


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ([1.0] * (WINDOW - 1), f"exactly {WINDOW} closes"),
        ([1.0] * (WINDOW - 1) + [0.0], f"prices[{WINDOW - 1}] must be a positive"),
        ([-1.0] + [1.0] * (WINDOW - 1), "prices[0] must be a positive"),
        ([1.0, math.nan] + [1.0] * (WINDOW - 2), "prices[1] must be a positive finite"),
    ],
)
def test_bad_windows_are_refused_with_the_reason(prices, message):
    with pytest.raises(PriceWindowError, match=message.replace("[", r"\[").replace("]", r"\]")):
        features_of(prices)


def test_generated_data_is_seeded_and_balanced():
    a, b = synthetic.generate(3_000, seed=7), synthetic.generate(3_000, seed=7)
    assert torch.equal(a.prices, b.prices) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.prices, synthetic.generate(3_000, seed=8).prices)
    assert a.prices.shape == (3_000, WINDOW) and bool((a.prices > 0).all())
    counts = torch.bincount(a.labels, minlength=3)
    assert int(counts.min()) > 800  # no class is rare: the majority baseline is about 1/3


def test_network_maps_a_batch_to_one_logit_per_class():
    net = model_file.SignalNet(FEATURES)
    assert net(torch.zeros(5, FEATURES)).shape == (5, len(synthetic.CLASSES))


def test_training_is_deterministic():
    cfg = TrainConfig(samples=1_500, validation_samples=500, epochs=2)
    (net_a, meta_a), (net_b, meta_b) = train(cfg), train(cfg)
    assert meta_a["version"] == meta_b["version"]
    weights_b = net_b.state_dict()
    for name, a in net_a.state_dict().items():
        assert torch.equal(a, weights_b[name]), name
    other, _ = train(TrainConfig(samples=1_500, validation_samples=500, epochs=2, seed=1))
    assert model_file.weights_digest(other) != model_file.weights_digest(net_a)


def test_trained_model_beats_the_majority_baseline_on_unseen_data(signal_model):
    loaded = model_file.load(signal_model)
    fresh = synthetic.generate(4_000, seed=424242)  # neither training nor validation data
    held_out = accuracy(loaded.net, from_prices(fresh.prices), fresh.labels)
    majority = float(torch.bincount(fresh.labels).max()) / len(fresh.labels)
    assert held_out > majority + 0.15, (held_out, majority)
    assert loaded.metadata["validation_accuracy"] > loaded.metadata["baseline_accuracy"] + 0.15


def test_model_file_round_trips_with_its_metadata(signal_model):
    loaded = model_file.load(signal_model)
    sidecar = json.loads(signal_model.with_name(signal_model.name + ".json").read_text())
    assert loaded.metadata == sidecar
    assert loaded.window == WINDOW and loaded.classes == ("sell", "hold", "buy")
    assert loaded.version == sidecar["version"] and sidecar["seed"] == TrainConfig().seed


def test_a_foreign_or_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(model_file.ModelFileError, match="no model file"):
        model_file.load(tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(model_file.ModelFileError, match="cannot load signal model"):
        model_file.load(junk)
