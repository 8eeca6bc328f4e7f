"""signals: buy/hold/sell from a window of closes, by a PyTorch model (gekko.signals).

The model file comes from `gekko train-signal-model` (the signals image's last build stage runs
it; see app/images/app.Dockerfile) and GEKKO_SIGNAL_MODEL_PATH names it. At start the service
picks its device (GEKKO_INFERENCE_DEVICE), loads the model there and warms it up, and only then
registers for traffic. Requests are micro-batched: concurrent predictions share one forward pass.
Like trading, it serves signed-in users only (a bearer token).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field

from gekko.config import ConfigError
from gekko.problems import ProblemError
from gekko.security.rbac import SIGNED_IN, TRADE, AccessTable
from gekko.services.deps import UserId
from gekko.signals import model as model_file
from gekko.signals.batching import MicroBatcher
from gekko.signals.device import apply_memory_fraction, choose_device, limit_threads, log_choice
from gekko.signals.features import PriceWindowError, request_features
from gekko.signals.predictor import Predictor
from gekko.signals.settings import (
    MODEL_PATH_ENV,
    TRAIN_HINT,
    InferenceSettings,
    load_inference_settings,
)
from gekko.signals.telemetry import InferenceMetrics, register_gpu_metrics

if TYPE_CHECKING:  # torch itself is imported by gekko.signals, after its warning filter
    import torch

log = logging.getLogger("gekko.signals")

PREFIX = "/api/v1/signals"
router = APIRouter(prefix=PREFIX, tags=["signals"])
# Who may call each route (gekko.security.rbac); a route missing here stops the service.
ACCESS: AccessTable = {
    ("POST", PREFIX + "/predict"): TRADE,
    ("POST", PREFIX + "/predict/batch"): TRADE,
    ("GET", PREFIX + "/model"): SIGNED_IN,
}

MAX_BATCH_ITEMS = 64
# NaN/Infinity are refused here (JSON parsers accept them); positivity is checked with the
# window length, so one message explains any bad window.
Close = Annotated[float, Field(allow_inf_nan=False)]


class PredictIn(BaseModel):
    symbol: str = Field(min_length=1, max_length=32, examples=["BTC-USD"])
    prices: list[Close] = Field(
        description="the window of closes the model expects (GET /api/v1/signals/model), "
        "oldest first, all positive",
    )


class PredictBatchIn(BaseModel):
    items: list[PredictIn] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class Probabilities(BaseModel):
    sell: float
    hold: float
    buy: float


class PredictOut(BaseModel):
    symbol: str
    signal: str
    probabilities: Probabilities
    model_version: str
    device: str


class PredictBatchOut(BaseModel):
    predictions: list[PredictOut]


class ModelOut(BaseModel):
    model_version: str
    window: int
    classes: list[str]
    device: str
    metadata: dict[str, Any]


def configure(app: FastAPI) -> None:
    """Before the port is bound: the settings, and a model file that loads. No model, no
    service (a clear configuration error, not a crash loop with a traceback)."""
    cfg = load_inference_settings()
    try:
        app.state.signal_model = model_file.load(cfg.model_path)
    except model_file.ModelFileError as exc:
        raise ConfigError(f"{MODEL_PATH_ENV}: {exc}; {TRAIN_HINT}") from None
    app.state.inference_settings = cfg


async def start(app: FastAPI) -> None:
    cfg: InferenceSettings = app.state.inference_settings
    limit_threads(cfg.torch_threads)
    choice = choose_device(cfg.device)
    log_choice(choice)
    apply_memory_fraction(choice, cfg.gpu_memory_fraction)
    predictor = await asyncio.to_thread(Predictor, app.state.signal_model, choice)
    seconds = await asyncio.to_thread(predictor.warm_up, cfg.warmup_passes, cfg.max_batch)
    log.info(
        "signal model %s loaded from %s on %s, warmed up in %.0f ms",
        predictor.version,
        cfg.model_path,
        choice.device,
        seconds * 1000,
    )
    metrics = InferenceMetrics(app.state.metrics_registry, choice)
    if cfg.gpu_metrics:
        register_gpu_metrics(app.state.metrics_registry)
    batcher = MicroBatcher(
        predictor.forward,
        max_batch=cfg.max_batch,
        max_wait_s=cfg.max_wait_ms / 1000,
        on_batch=metrics.batch_size.observe,
    )
    batcher.start()
    app.state.predictor, app.state.batcher, app.state.inference_metrics = (
        predictor,
        batcher,
        metrics,
    )


async def stop(app: FastAPI) -> None:
    batcher = getattr(app.state, "batcher", None)
    if batcher is not None:
        await batcher.stop()


def health_details(app: FastAPI) -> dict[str, Any]:
    predictor: Predictor | None = getattr(app.state, "predictor", None)
    if predictor is None:
        return {"inference": {"status": "loading"}}
    choice = predictor.choice
    return {
        "inference": {
            "device": choice.device,
            "requested_device": choice.requested,
            "fallback_reason": choice.fallback_reason,
            "model_version": predictor.version,
            "warmed_up": predictor.warmed_up,
        }
    }


def _features(predictor: Predictor, item: PredictIn, where: str = "") -> torch.Tensor:
    try:
        return request_features(item.prices, predictor.window)
    except PriceWindowError as exc:
        raise ProblemError(
            422, f"{where}{exc}", title="Invalid price window", slug="validation"
        ) from None


async def _predict(app: FastAPI, item: PredictIn, features: torch.Tensor) -> PredictOut:
    predictor: Predictor = app.state.predictor
    metrics: InferenceMetrics = app.state.inference_metrics
    started = time.perf_counter()
    probabilities = await app.state.batcher.submit(features)
    metrics.latency.observe(time.perf_counter() - started)
    by_class = dict(zip(predictor.classes, probabilities, strict=True))
    signal = max(by_class, key=by_class.__getitem__)
    metrics.predictions.labels(signal).inc()
    return PredictOut(
        symbol=item.symbol.strip().upper(),
        signal=signal,
        probabilities=Probabilities(**by_class),
        model_version=predictor.version,
        device=predictor.choice.device,
    )


@router.post("/predict", response_model=PredictOut)
async def predict(body: PredictIn, request: Request, _user: UserId) -> PredictOut:
    return await _predict(request.app, body, _features(request.app.state.predictor, body))


@router.post("/predict/batch", response_model=PredictBatchOut)
async def predict_batch(body: PredictBatchIn, request: Request, _user: UserId) -> PredictBatchOut:
    predictor: Predictor = request.app.state.predictor
    # Every window is checked before any is computed: a bad item fails the whole request.
    features = [_features(predictor, item, f"items[{i}]: ") for i, item in enumerate(body.items)]
    # Each item goes through the batcher, so a client's batch and concurrent requests coalesce.
    results = await asyncio.gather(
        *(_predict(request.app, item, row) for item, row in zip(body.items, features, strict=True))
    )
    return PredictBatchOut(predictions=list(results))


@router.get("/model", response_model=ModelOut)
async def model_info(request: Request, _user: UserId) -> ModelOut:
    predictor: Predictor = request.app.state.predictor
    return ModelOut(
        model_version=predictor.version,
        window=predictor.window,
        classes=list(predictor.classes),
        device=predictor.choice.device,
        metadata=predictor.metadata,
    )
