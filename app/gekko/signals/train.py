"""Train the signal model on generated windows and write it (weights + metadata).

    gekko train-signal-model --out PATH        (or: python -m gekko.signals.train --out PATH)

Deterministic: the seed fixes the data, the initial weights and the batch order, and training
runs on one CPU thread, so the same seed writes the same weights (and the same version). Takes a
few seconds on one core; the signals image's last build stage runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gekko.signals import model as model_file
from gekko.signals import synthetic
from gekko.signals.features import FEATURES, WINDOW, from_prices

DEFAULT_SEED = 20260101
# Disjoint seed streams: validation data is never trained on.
_TRAIN_SEED_OFFSET, _VALIDATION_SEED_OFFSET = 0, 1_000_003


@dataclass(frozen=True)
class TrainConfig:
    seed: int = DEFAULT_SEED
    samples: int = 24_000
    validation_samples: int = 6_000
    epochs: int = 12
    batch_size: int = 256
    learning_rate: float = 3e-3
    hidden: int = 64


def accuracy(net: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode():
        predicted = net(features).argmax(dim=1)
    return float((predicted == labels).float().mean())


def majority_baseline(train_labels: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of always answering the most frequent training label: what the model must beat."""
    majority = int(torch.bincount(train_labels, minlength=len(synthetic.CLASSES)).argmax())
    return float((labels == majority).float().mean())


def train(cfg: TrainConfig) -> tuple[model_file.SignalNet, dict[str, Any]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: bit-for-bit reproducible and no oversubscription
    try:
        torch.manual_seed(cfg.seed)
        data = synthetic.generate(cfg.samples, cfg.seed + _TRAIN_SEED_OFFSET)
        held_out = synthetic.generate(cfg.validation_samples, cfg.seed + _VALIDATION_SEED_OFFSET)
        x, y = from_prices(data.prices), data.labels
        x_val, y_val = from_prices(held_out.prices), held_out.labels

        net = model_file.SignalNet(FEATURES, cfg.hidden, len(synthetic.CLASSES))
        optimiser = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
        loss_fn = nn.CrossEntropyLoss()
        order = torch.Generator().manual_seed(cfg.seed)
        net.train()
        for _ in range(cfg.epochs):
            for batch in torch.randperm(len(x), generator=order).split(cfg.batch_size):
                optimiser.zero_grad()
                loss_fn(net(x[batch]), y[batch]).backward()
                optimiser.step()
        net.eval()
        metadata = {
            "arch": model_file.ARCH,
            "version": f"{model_file.ARCH}-w{WINDOW}-{model_file.weights_digest(net)}",
            "window": WINDOW,
            "hidden": cfg.hidden,
            "classes": list(synthetic.CLASSES),
            "seed": cfg.seed,
            "samples": cfg.samples,
            "epochs": cfg.epochs,
            "train_accuracy": round(accuracy(net, x, y), 4),
            "validation_accuracy": round(accuracy(net, x_val, y_val), 4),
            "baseline_accuracy": round(majority_baseline(y, y_val), 4),
            "torch": str(torch.__version__),
        }
        return net, metadata
    finally:
        torch.set_num_threads(threads)


def write(out: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Train and write PATH (weights + metadata) and PATH.json (the metadata, for people)."""
    net, metadata = train(cfg)
    model_file.save(out, net, metadata)
    out.with_name(out.name + ".json").write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gekko train-signal-model",
        description="Train the trading-signal model on seeded synthetic prices.",
    )
    defaults = TrainConfig()
    parser.add_argument("--out", required=True, type=Path, help="model file to write")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--samples", type=int, default=defaults.samples)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = TrainConfig(seed=args.seed, samples=args.samples, epochs=args.epochs)
    metadata = write(args.out, cfg)
    print(
        f"wrote {args.out}: {metadata['version']}, validation accuracy "
        f"{metadata['validation_accuracy']:.1%} (majority baseline "
        f"{metadata['baseline_accuracy']:.1%})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
