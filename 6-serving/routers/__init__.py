"""One APIRouter per concern, all under /v1 (ops endpoints at the root).

No `from __future__ import annotations` in these modules: request models are built per server
config, and FastAPI reads endpoint annotations as real objects.
"""
