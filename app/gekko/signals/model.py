"""The signal network and its file format.

A small MLP over the standardised log returns of one window -> logits for sell/hold/buy. Small
on purpose: a forward pass is a few microseconds of matrix work, so the service's latency is
dominated by HTTP, not by the model. The file holds the weights and the metadata the service
needs (window, classes, version); torch.load(weights_only=True) reads it without unpickling
code.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = 1
ARCH = "mlp"


class ModelFileError(ValueError):
    """The model file is missing or is not a signal model this code can run."""


class SignalNet(nn.Module):
    def __init__(self, features: int, hidden: int = 64, classes: int = 3) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Linear(hidden // 2, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@dataclass(frozen=True)
class LoadedModel:
    net: SignalNet
    metadata: dict[str, Any]

    @property
    def window(self) -> int:
        return int(self.metadata["window"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.metadata["classes"])

    @property
    def version(self) -> str:
        return str(self.metadata["version"])


def weights_digest(net: nn.Module) -> str:
    """A short hash of the weights: the model version, equal for equal training runs."""
    buffer = io.BytesIO()
    for name, tensor in sorted(net.state_dict().items()):
        buffer.write(name.encode())
        buffer.write(bytes(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).tolist()))
    return hashlib.sha256(buffer.getvalue()).hexdigest()[:12]


def save(path: Path, net: SignalNet, metadata: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "state_dict": net.state_dict(), "metadata": metadata}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # never a half-written model at PATH


def load(path: Path) -> LoadedModel:
    if not path.is_file():
        raise ModelFileError(f"no model file at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        metadata = dict(blob["metadata"])
        if blob.get("format") != FORMAT or metadata.get("arch") != ARCH:
            raise ModelFileError(
                f"{path} is format {blob.get('format')!r}/{metadata.get('arch')!r}, "
                f"expected {FORMAT}/{ARCH!r}"
            )
        net = SignalNet(
            int(metadata["window"]) - 1, int(metadata["hidden"]), len(metadata["classes"])
        )
        net.load_state_dict(blob["state_dict"])
    except ModelFileError:
        raise
    except Exception as exc:  # a truncated or foreign file: say which file, not a traceback
        # torch's own message runs to paragraphs (and suggests unsafe loading): keep its gist.
        gist = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise ModelFileError(
            f"cannot load signal model {path}: not a readable model file "
            f"({type(exc).__name__}: {gist})"
        ) from exc
    net.eval()
    return LoadedModel(net, metadata)
