"""Serving: the registry champion behind a generation API (`musicops serve`, docs/serving.md).

`app` (FastAPI app + uvicorn), `routers/` (one APIRouter per concern under /v1), `engine` (cache +
dynamic batching over the batch pipeline's steps), `finisher` (post-process + store off the model
thread: the worker pool, rebuilt when a worker dies, and the workers' side), `model_manager` (alias
watching, hot swap), `jobs` (durable SQLite job queue, webhooks), `keys` (hashed API keys, rate
limits, quotas), `signing` (expiring HMAC asset URLs), `metrics` (Prometheus), `context` (request
ids, access log), `schemas`, `service`, `config`.
Imports nothing heavy: `musicops serve` loads FastAPI, torch and MLflow only when it starts.
"""
