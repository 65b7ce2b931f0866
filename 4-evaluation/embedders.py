"""Audio/text embedders behind one small interface, chosen by name (`get_embedder`).

Every embedder cuts audio into fixed, deterministic windows (no random crops), so the same clip
always gives the same embedding, and records what it did in a `MetricProvenance`. Presets:

- `clap-tiny`: CLAP's real architecture (HTSAT audio tower + RoBERTa text tower) at toy size, random
  init, with a locally built byte-level BPE tokenizer. For tests and demos only: its embeddings
  mean nothing musically.
- `clap`: LAION CLAP in transformers format from a local directory (e.g. a local copy of
  laion/clap-htsat-unfused), loaded with `local_files_only=True`.
- `clap:OWNER/NAME[@REVISION]` (e.g. `clap:laion/clap-htsat-unfused`): the same, from the Hugging
  Face hub through its standard cache (`musicops.models.hub`: `HF_HUB_OFFLINE`, `HF_HOME` and
  `HF_HUB_CACHE` respected). The embedder's name records the commit it resolved to
  (`clap:laion/clap-htsat-unfused@<sha>`), so metric provenance and a catalog rebuilt from its
  recorded name use exactly those weights.
- `laion-clap`: the `laion_clap` package (optional, not installed by default).
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from musicops.audio.convert import RESAMPLER, resample, to_mono
from musicops.evaluation.provenance import MetricProvenance
from musicops.hashing import directory_sha256

CLAP_TINY = "clap-tiny"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


class Embedder(abc.ABC):
    """Fixed-window audio embedder (and text embedder where the model has a text tower)."""

    name: str
    sample_rate: int
    window_s: float
    hop_s: float
    weights_sha256: str
    resampler: str = RESAMPLER

    # ------------------------------------------------------------ to implement
    @abc.abstractmethod
    def _embed_batch(self, windows: np.ndarray) -> np.ndarray:
        """(n, window samples) float32 mono at `sample_rate` -> (n, dim) float32, any norm."""

    @abc.abstractmethod
    def embed_text(self, texts: list[str]) -> np.ndarray:
        """(n, dim) L2-normalised text embeddings; NotImplementedError without a text tower."""

    # ------------------------------------------------------------------ shared
    def provenance(self, loudness_normalisation: str = "none", reference_set_sha256: str = "") -> MetricProvenance:
        return MetricProvenance(
            embedder=self.name,
            weights_sha256=self.weights_sha256,
            sample_rate=int(self.sample_rate),
            resampler=self.resampler,
            window_s=float(self.window_s),
            hop_s=float(self.hop_s),
            loudness_normalisation=loudness_normalisation,
            reference_set_sha256=reference_set_sha256,
        )

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_s * self.sample_rate))

    def windows(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Mono, resampled, cut into (n_windows, window samples) with start offsets in seconds.

        Windows start every hop until every sample is covered; the last one is zero-padded.
        """
        mono = _to_mono(audio)
        mono = resample(mono, sample_rate, self.sample_rate)
        win, hop = self.window_samples, self.hop_samples
        count = 1 + max(0, math.ceil((mono.shape[0] - win) / hop))
        padded = np.zeros((count - 1) * hop + win, dtype=np.float32)
        padded[: mono.shape[0]] = mono
        starts = np.arange(count) * hop
        frames = np.stack([padded[s:s + win] for s in starts])
        return frames, starts / float(self.sample_rate)

    def embed_windows(self, audio: np.ndarray, sample_rate: int,
                      batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(n_windows, dim) L2-normalised float32 embeddings and window start offsets in seconds."""
        _check_batch_size(batch_size)
        frames, offsets = self.windows(audio, sample_rate)
        parts = [self._embed_batch(frames[i:i + batch_size]) for i in range(0, frames.shape[0], batch_size)]
        return _l2(np.concatenate(parts)), offsets

    def embed_audio(self, clips: list[np.ndarray], sample_rate: int, batch_size: int = 16) -> np.ndarray:
        """(n, dim): each clip's mean window embedding, re-normalised.

        Windows of all clips share batches; at most one clip's windows plus one batch are in memory.
        """
        _check_batch_size(batch_size)
        owners: list[int] = []
        pending: list[np.ndarray] = []
        parts: list[np.ndarray] = []
        from musicops import progress

        for index, clip in enumerate(clips):
            for frame in self.windows(clip, sample_rate)[0]:
                pending.append(frame)
                owners.append(index)
                if len(pending) == batch_size:
                    parts.append(self._embed_batch(np.stack(pending)))
                    pending = []
            progress.update("clips embedded", index + 1, len(clips))
        if pending:
            parts.append(self._embed_batch(np.stack(pending)))
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        embedded = _l2(np.concatenate(parts)).astype(np.float64)
        owner = np.asarray(owners)
        sums = np.zeros((len(clips), embedded.shape[1]))
        np.add.at(sums, owner, embedded)
        return _l2(sums / np.bincount(owner, minlength=len(clips))[:, None])

    @property
    def dim(self) -> int:
        return int(self._embed_batch(np.zeros((1, self.window_samples), dtype=np.float32)).shape[1])


class ClapEmbedder(Embedder):
    """transformers `ClapModel` + `ClapProcessor`; the HTSAT spectrogram expects 48 kHz audio."""

    def __init__(self, model: Any, processor: Any, name: str, weights_sha256: str, hop_s: float | None = None):
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.weights_sha256 = weights_sha256
        extractor = processor.feature_extractor
        self.sample_rate = int(extractor.sampling_rate)
        self.window_s = float(extractor.max_length_s)
        self.hop_s = float(hop_s if hop_s is not None else self.window_s / 2)
        # fusion checkpoints need the 4-channel "fusion" features; unfused ones the 1-channel kind
        self._truncation = "fusion" if model.config.audio_config.enable_fusion else "rand_trunc"
        self._dim = int(model.config.projection_dim)

    @property
    def dim(self) -> int:
        return self._dim

    @classmethod
    def from_preset(cls, name: str = CLAP_TINY, seed: int = 0) -> ClapEmbedder:
        if name != CLAP_TINY:
            raise ValueError(f"unknown CLAP preset {name!r}; the built-in preset is {CLAP_TINY!r}")
        with _quiet_transformers():
            model, processor = build_tiny_clap(seed)
        return cls(model, processor, name=CLAP_TINY, weights_sha256=state_dict_sha256(model), hop_s=1.0)

    @classmethod
    def from_dir(cls, directory: str | Path, name: str = "clap") -> ClapEmbedder:
        """Load a transformers-format CLAP directory (config.json, weights, processor files) offline."""
        from transformers import ClapModel, ClapProcessor

        directory = Path(directory)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path}: missing; not a transformers CLAP model directory")
        model_type = json.loads(config_path.read_text()).get("model_type")
        if model_type != "clap":
            raise ValueError(f"{config_path}: model_type is {model_type!r}, expected 'clap'")
        with _quiet_transformers():
            model = ClapModel.from_pretrained(directory, local_files_only=True)
            processor = ClapProcessor.from_pretrained(directory, local_files_only=True)
        _check_tokenizer(processor.tokenizer, directory)
        return cls(model, processor, name=name, weights_sha256=files_sha256(directory))

    def _embed_batch(self, windows: np.ndarray) -> np.ndarray:
        import torch

        extractor = self.processor.feature_extractor
        rng_state = np.random.get_state()  # "fusion" draws from numpy's global RNG even for full windows
        try:
            features = extractor(list(windows.astype(np.float64)), sampling_rate=self.sample_rate,
                                 truncation=self._truncation, padding="repeatpad", return_tensors="pt")
        finally:
            np.random.set_state(rng_state)
        device = next(self.model.parameters()).device
        # Every window is exactly max_length long: none is "longer" (transformers flags a random one)
        is_longer = torch.zeros((windows.shape[0], 1), dtype=torch.bool, device=device)
        with torch.inference_mode():
            out = self.model.get_audio_features(
                input_features=features["input_features"].to(device=device, dtype=torch.float32),
                is_longer=is_longer,
            )
        return _pooled(out)

    def embed_text(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokenizer = self.processor.tokenizer
        max_length = min(int(tokenizer.model_max_length),
                         int(self.model.config.text_config.max_position_embeddings) - 2)
        device = next(self.model.parameters()).device
        parts = []
        for i in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                               max_length=max_length, return_tensors="pt").to(device)
            with torch.inference_mode():
                out = self.model.get_text_features(input_ids=tokens["input_ids"],
                                                   attention_mask=tokens["attention_mask"])
            parts.append(_pooled(out))
        return _l2(np.concatenate(parts))


class LaionClapEmbedder(Embedder):
    """The `laion_clap` package's CLAP_Module from local files only (untested here: not installed).

    `directory` holds one checkpoint (`*.pt`) and `roberta-base/` (the tokenizer's vocab.json and
    merges.txt, plus config.json for the text tower): laion_clap loads 'roberta-base' by name, which
    resolves to that folder when it is the working directory during construction.
    """

    name = "laion-clap"
    sample_rate = 48_000
    window_s = 10.0
    hop_s = 5.0

    def __init__(self, directory: str | Path, enable_fusion: bool = False, amodel: str = "HTSAT-tiny"):
        laion_clap = _import_laion_clap()
        directory = Path(directory)
        checkpoints = sorted(directory.glob("*.pt")) if directory.is_dir() else []
        if len(checkpoints) != 1:
            raise FileNotFoundError(f"{directory}: expected exactly one laion_clap checkpoint (*.pt), "
                                    f"found {[c.name for c in checkpoints]}")
        roberta = directory / "roberta-base"
        for needed in ("vocab.json", "merges.txt", "config.json"):
            if not (roberta / needed).is_file():
                raise FileNotFoundError(f"{roberta / needed}: missing; laion_clap needs a local roberta-base")
        if not any((roberta / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
            raise FileNotFoundError(f"{roberta / 'model.safetensors'}: missing (or pytorch_model.bin); laion_clap "
                                    "builds its text tower with RobertaModel.from_pretrained('roberta-base')")
        with contextlib.chdir(directory), _quiet_transformers(), contextlib.redirect_stdout(io.StringIO()):
            self.module = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel, device="cpu")
            _check_tokenizer(self.module.tokenize, roberta)
            self.module.load_ckpt(str(checkpoints[0].resolve()))  # prints every parameter name
        self.module.eval()
        self.weights_sha256 = files_sha256(directory, [checkpoints[0]])

    def _embed_batch(self, windows: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return np.asarray(self.module.get_audio_embedding_from_data(windows, use_tensor=False), np.float32)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            return _l2(np.asarray(self.module.get_text_embedding(list(texts)), np.float32))


# ------------------------------------------------------------------ registry
def _clap_tiny(path: str | None) -> Embedder:
    if path is not None:
        raise ValueError(f"{CLAP_TINY!r} is a built-in preset and takes no path (use 'clap' for a directory)")
    return ClapEmbedder.from_preset(CLAP_TINY)


def _clap_dir(path: str | None) -> Embedder:
    if path is None:
        raise ValueError("embedder 'clap' needs path= a local transformers CLAP directory "
                         "(e.g. a copy of laion/clap-htsat-unfused) or an MLflow models:/ or runs:/ URI of one")
    if path.startswith(("models:/", "runs:/")) or "://" in path:
        return ClapEmbedder.from_dir(_downloaded_clap(path), name=f"clap:{path}")
    return ClapEmbedder.from_dir(path)


def _downloaded_clap(uri: str) -> Path:
    """The transformers CLAP directory inside MLflow artifacts (downloaded through MLflow's own client:
    its artifact store may be local, an MLflow server or S3); the first folder holding a CLAP config."""
    from mlflow.artifacts import download_artifacts

    from musicops.registry import configure_mlflow

    configure_mlflow()
    try:
        local = Path(download_artifacts(artifact_uri=uri))
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types; the user needs the URI and why
        raise FileNotFoundError(f"{uri}: cannot fetch CLAP weights through MLflow ({exc})") from exc
    for config in sorted(local.rglob("config.json"), key=lambda p: len(p.parts)):
        try:
            if json.loads(config.read_text()).get("model_type") == "clap":
                return config.parent
        except (OSError, ValueError):
            continue
    raise FileNotFoundError(f"{uri}: no transformers CLAP model (config.json with model_type 'clap') in its artifacts")


def _laion_clap(path: str | None) -> Embedder:
    _import_laion_clap()  # a missing package is the first thing to say
    if path is None:
        raise ValueError("embedder 'laion-clap' needs path= a directory with the checkpoint and roberta-base/")
    return LaionClapEmbedder(path)


CLAP_HUB_PREFIX = "clap:"


def _clap_hub(reference: str, path: str | None) -> Embedder:
    """`clap:OWNER/NAME[@REVISION]`: a transformers CLAP snapshot from the hub (or the offline cache)."""
    from musicops.models.hub import parse_hub_id, snapshot

    if path is not None:
        raise ValueError(f"embedder {reference!r} names a hub id and takes no path (use 'clap' for a directory)")
    ref = parse_hub_id(reference[len(CLAP_HUB_PREFIX):])
    if ref is None:
        raise ValueError(f"embedder {reference!r}: expected clap:OWNER/NAME or clap:OWNER/NAME@REVISION "
                         "(e.g. clap:laion/clap-htsat-unfused)")
    snap = snapshot(ref)  # HubModelNotFoundError (exit 2) names the id, revision and cache directory
    return ClapEmbedder.from_dir(snap.directory, name=f"{CLAP_HUB_PREFIX}{snap.repo_id}@{snap.commit}")


_REGISTRY: dict[str, Callable[[str | None], Embedder]] = {
    CLAP_TINY: _clap_tiny,
    "clap": _clap_dir,
    "laion-clap": _laion_clap,
}


def available_embedders() -> list[str]:
    return sorted(_REGISTRY)


def get_embedder(name: str = CLAP_TINY, path: str | None = None) -> Embedder:
    """Build an embedder by registry name, or `clap:OWNER/NAME[@REVISION]` for a hub CLAP; `path` is
    the local model directory where one is needed."""
    if name.startswith(CLAP_HUB_PREFIX):
        return _clap_hub(name, None if path is None else str(path))
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ValueError(f"unknown embedder {name!r}; known embedders: {', '.join(available_embedders())}, "
                         f"or {CLAP_HUB_PREFIX}OWNER/NAME[@REVISION] (a hub CLAP, e.g. "
                         f"{CLAP_HUB_PREFIX}laion/clap-htsat-unfused)")
    return factory(None if path is None else str(path))


# ------------------------------------------------------------------- helpers
def _import_laion_clap() -> Any:
    try:
        import laion_clap
    except ImportError as exc:
        raise ImportError(
            "embedder 'laion-clap' needs the optional laion_clap package: pip install laion-clap; "
            "note its numpy<2 pin conflicts with this project's numpy>=2, so install it in a separate "
            "environment, or use embedder 'clap' (the same LAION CLAP weights in transformers format)"
        ) from exc
    return laion_clap


def _check_tokenizer(tokenizer: Any, source: Path) -> None:
    """transformers 5 can build a RoBERTa tokenizer with only its 5 special tokens when vocab files
    are missing; such a tokenizer maps every prompt to <unk> and makes every text embedding equal."""
    size = len(tokenizer)
    if size <= 5:
        raise FileNotFoundError(f"{source}: tokenizer has only {size} tokens; vocab.json/merges.txt "
                                "(or tokenizer.json) missing")


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _to_mono(audio: np.ndarray) -> np.ndarray:
    """Float32 mono, refusing what no embedding should be computed from (empty or non-finite)."""
    arr = to_mono(audio)
    if arr.shape[0] == 0:
        raise ValueError("audio is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError("audio contains NaN or inf")
    return arr


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _pooled(out: Any) -> np.ndarray:
    """transformers 5's get_*_features return a ModelOutput (projected, normalised pooler_output);
    4.x returned the tensor itself."""
    tensor = out.pooler_output if hasattr(out, "pooler_output") else out
    return tensor.detach().float().cpu().numpy()


def state_dict_sha256(model: Any) -> str:
    """sha256 over every state_dict tensor (name, dtype, shape, bytes) in sorted name order."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, bfloat16 included
    return digest.hexdigest()


def files_sha256(directory: str | Path, files: list[Path] | None = None) -> str:
    """sha256 over a directory's weight files (relative name + content), in sorted order."""
    directory = Path(directory)
    if files is None:
        files = [p for p in directory.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)]
    if not files:
        raise FileNotFoundError(f"{directory}: no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    return directory_sha256(directory, files)


@contextlib.contextmanager
def _quiet_transformers():
    from musicops.models.musicgen import _quiet_transformers as quiet

    with quiet():
        yield


# --------------------------------------------------------------- tiny preset
_WORDS = (
    "a", "an", "and", "the", "with", "in", "of", "at", "for", "no", "soft", "loud", "slow", "fast",
    "bright", "dark", "warm", "piano", "guitar", "drums", "bass", "synth", "lead", "pad", "strings",
    "organ", "bell", "pluck", "kick", "snare", "hat", "major", "minor", "bpm", "tempo", "key", "happy",
    "sad", "calm", "energetic", "ambient", "upbeat", "melancholic", "playful", "epic", "dreamy", "melody",
    "chords", "beat", "rhythm", "groove", "loop", "jazz", "rock", "pop", "electronic", "lofi", "classical",
    "cinematic", "music", "song", "track", "sound", "vocal",
)


def build_tokenizer() -> Any:
    """A real byte-level BPE RoBERTa tokenizer trained locally on a few prompt words: all 256 byte
    symbols are in the vocabulary, so any text encodes without <unk>; common words are one token.
    The BPE trainer breaks ties by pair order, so the vocabulary is the same on every run."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(list(_WORDS) + [" " + word for word in _WORDS], trainer)
    learned = json.loads(bpe.to_str())["model"]
    merges = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in learned["merges"]]
    # transformers annotates `merges` as list[str]; the tokenizers backend takes (left, right) pairs
    return RobertaTokenizer(vocab=learned["vocab"], merges=merges, model_max_length=128)  # type: ignore[arg-type]


def build_tiny_clap(seed: int = 0) -> tuple[Any, Any]:
    """Return (ClapModel, ClapProcessor): CLAP's architecture at toy size, random init, deterministic
    for a seed. 48 kHz input, 2 s windows, 16 mel bins with a 20 ms hop; one HTSAT stage pair."""
    import torch
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        ClapTextConfig,
    )

    tokenizer = build_tokenizer()
    audio = ClapAudioConfig(
        num_mel_bins=16,
        spec_size=64,  # freq_ratio 4: up to 256 frames x 16 bins fold into a 64 x 64 "image"
        window_size=4,
        patch_size=4,
        patch_stride=[4, 4],
        patch_embeds_hidden_size=32,
        depths=[1, 1],
        num_attention_heads=[2, 4],
        hidden_size=64,  # = patch_embeds_hidden_size * 2 ** (len(depths) - 1)
        num_hidden_layers=2,
        num_classes=2,
        enable_fusion=False,
    )
    text = ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=130,  # RoBERTa positions start after the pad id: 128 tokens
    )
    config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=64)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = ClapModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    extractor = ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=48_000,
        hop_length=960,
        max_length_s=2,
        fft_window_size=1024,
        truncation="rand_trunc",  # unfused; windows are exactly max_length so nothing is cropped
        padding="repeatpad",
    )
    model.eval()
    return model, ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer)
