"""The MLflow pyfunc flavour of a musicops MusicGen model ("models from code": MLflow copies this file).

`mlflow.pyfunc.load_model("models:/NAME@champion").predict([{"prompt": "calm piano", "seed": 1}])`
works for any MLflow user; musicops
itself loads the same artifact directory directly (see `musicops.models.loading`).
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import pydantic
from mlflow.pyfunc import PythonModel  # by name: to mypy, `mlflow.pyfunc` is mlflow's lazy-loader attribute

from musicops.registry import MUSICGEN_ARTIFACT


class GenerateRequest(pydantic.BaseModel):
    prompt: str
    seed: int = 0
    duration_s: float = 2.0


class MusicGenPyfunc(PythonModel):
    """Input: a list of {prompt, seed, duration_s}. Output: one base64 WAV per request."""

    def load_context(self, context: Any) -> None:
        from musicops.models.musicgen import TransformersMusicGen

        self._model = TransformersMusicGen.from_dir(context.artifacts[MUSICGEN_ARTIFACT])

    # MLflow's newer predict signature, without `context`; the base class still declares the old one
    def predict(self, model_input: list[GenerateRequest],  # type: ignore[override]
                params: dict[str, Any] | None = None) -> list[str]:
        """One base64-encoded 16-bit WAV per request (MLflow validates requests from the type hints)."""
        import base64
        import io

        import soundfile as sf

        from musicops.models.base import GenerationParams

        out = []
        for request in model_input:
            gen = GenerationParams(duration_s=request.duration_s)
            clip = self._model.generate([request.prompt], gen, seed=request.seed)[0]
            buffer = io.BytesIO()
            sf.write(buffer, clip, self._model.sample_rate, format="WAV", subtype="PCM_16")
            out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
        return out


mlflow.models.set_model(MusicGenPyfunc())
