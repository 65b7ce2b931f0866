"""The MLflow pyfunc flavour of a musicops MusicGen model.

`mlflow.pyfunc.load_model("models:/NAME@champion").predict(df)` works for any MLflow user; musicops
itself loads the same artifact directory directly (see `musicops.models.loading`).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

from musicops.registry import MUSICGEN_ARTIFACT


class MusicGenPyfunc(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with `prompt` (and optional `seed`, `duration_s`). Output: audio per row."""

    def load_context(self, context: Any) -> None:
        from musicops.models.musicgen import TransformersMusicGen

        self._model = TransformersMusicGen.from_dir(context.artifacts[MUSICGEN_ARTIFACT])

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        from musicops.models.base import GenerationParams

        rows = model_input.to_dict("records")
        out = []
        for row in rows:
            gen = GenerationParams(duration_s=float(row.get("duration_s") or 2.0))
            clip = self._model.generate([str(row["prompt"])], gen, seed=int(row.get("seed") or 0))[0]
            out.append({"sample_rate": self._model.sample_rate, "audio": clip[:, 0].tolist()})
        return pd.DataFrame(out)
