"""The trading-signal model behind the `signals` service.

One job per module: features (prices -> model input), synthetic (the seeded price generator the
model is trained on), model (the network and its file format), train (the training script),
device (where inference runs), batching (the asyncio micro-batcher), predictor (a loaded model
on its device), telemetry (inference and GPU metrics).
"""

import warnings

# The CPU torch wheel looks for NumPy at import; this package never converts to NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
