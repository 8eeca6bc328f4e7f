"""A loaded signal model on its device: one forward for a batch of feature rows."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from gekko.signals import model as model_file
from gekko.signals.device import DeviceChoice

log = logging.getLogger("gekko.signals.predictor")


class Predictor:
    def __init__(self, loaded: model_file.LoadedModel, choice: DeviceChoice) -> None:
        self.choice = choice
        self.device = torch.device(choice.device)
        self.net = loaded.net.to(self.device).eval()
        self.metadata = loaded.metadata
        self.window = loaded.window
        self.classes = loaded.classes
        self.version = loaded.version
        self.warmed_up = False

    @classmethod
    def load(cls, path: Path, choice: DeviceChoice) -> Predictor:
        return cls(model_file.load(path), choice)

    def forward(self, rows: torch.Tensor) -> list[list[float]]:
        """[B, F] float32 features -> B rows of class probabilities (in self.classes order)."""
        with torch.inference_mode():
            logits = self.net(rows.to(self.device, non_blocking=True))
            return torch.softmax(logits, dim=1).cpu().tolist()

    def warm_up(self, passes: int, max_batch: int) -> float:
        """Run the shapes the service will see (one row and a full batch) before it takes
        traffic: first calls pay for allocator, kernel selection and, on CUDA, context setup.
        Returns the seconds it took."""
        started = time.perf_counter()
        features = self.net.layers[0].in_features
        for _ in range(passes):
            for size in {1, max_batch}:
                self.forward(torch.zeros(size, features))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.warmed_up = True
        return time.perf_counter() - started
