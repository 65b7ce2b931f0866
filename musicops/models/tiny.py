"""The built-in `musicgen-tiny` preset: MusicGen's real architecture at toy size, random init.

It exists so the demo and tests exercise the real transformers code paths (T5 text encoder,
EnCodec, the delay-pattern decoder) without downloading weights. Its audio is noise-like: it has
never been trained on music. Load real weights (a local copy of facebook/musicgen-small, or an
MLflow model version) for anything that should sound like music.
"""

from __future__ import annotations

from typing import Any

TINY_PRESET = "musicgen-tiny"
STEREO_PRESET = "musicgen-stereo-tiny"  # 2 audio channels: interleaved left/right codebooks, as musicgen-stereo-*
MELODY_PRESET = "musicgen-melody-tiny"  # MusicgenMelodyForConditionalGeneration: text + chroma prepended
PRESETS = (TINY_PRESET, STEREO_PRESET, MELODY_PRESET)
TINY_NOTICE = (
    "musicgen-tiny is a random-init toy of MusicGen's architecture: it produces noise-like audio. "
    "Use real weights (a local model directory or an MLflow version) for music."
)
SAMPLE_RATE = 32_000
CODEBOOK_SIZE = 2048  # same as musicgen-small; EnCodec's bandwidth arithmetic assumes 11-bit codes
NUM_CODEBOOKS = 4

_WORDS = [
    "a",
    "an",
    "and",
    "the",
    "with",
    "in",
    "of",
    "at",
    "for",
    "no",
    "soft",
    "loud",
    "slow",
    "fast",
    "bright",
    "dark",
    "warm",
    "piano",
    "guitar",
    "drums",
    "bass",
    "synth",
    "lead",
    "pad",
    "strings",
    "organ",
    "bell",
    "pluck",
    "kick",
    "snare",
    "hat",
    "major",
    "minor",
    "bpm",
    "tempo",
    "key",
    "happy",
    "sad",
    "calm",
    "energetic",
    "ambient",
    "upbeat",
    "melancholic",
    "playful",
    "epic",
    "dreamy",
    "melody",
    "chords",
    "beat",
    "rhythm",
    "groove",
    "loop",
    "jazz",
    "rock",
    "pop",
    "electronic",
    "lofi",
    "classical",
    "cinematic",
]
_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#-,.;:!?'()/&+"


def build_tokenizer() -> Any:
    """A real T5 (Unigram) tokenizer built from a small local vocabulary: no hub access."""
    from transformers import T5Tokenizer

    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + word, -1.0) for word in _WORDS]
    vocab += [(char, -5.0) for char in _CHARS]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_preset(name: str, seed: int = 0) -> tuple[Any, Any]:
    """(model, processor) of a built-in preset; KeyError for an unknown name."""
    if name == TINY_PRESET:
        return build_tiny_musicgen(seed)
    if name == STEREO_PRESET:
        return build_tiny_musicgen(seed, audio_channels=2)
    if name == MELODY_PRESET:
        return build_tiny_musicgen_melody(seed)
    raise KeyError(name)


def _tiny_text_config(tokenizer: Any) -> Any:
    from transformers import T5Config

    return T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        decoder_start_token_id=0,  # type: ignore[call-arg]  # accepted as **kwargs; not in the typed signature
    )


def _tiny_audio_config() -> Any:
    """EnCodec at toy size; mono even for stereo MusicGen, whose channels are coded separately."""
    from transformers import EncodecConfig

    return EncodecConfig(
        sampling_rate=SAMPLE_RATE,
        audio_channels=1,
        hidden_size=32,
        num_filters=4,
        num_residual_layers=1,
        upsampling_ratios=[8, 5, 4, 4],
        num_lstm_layers=1,
        codebook_size=CODEBOOK_SIZE,
        target_bandwidths=[2.2],
        normalize=False,
    )


def build_tiny_musicgen(seed: int = 0, audio_channels: int = 1) -> tuple[Any, Any]:
    """Return (MusicgenForConditionalGeneration, MusicgenProcessor), deterministic for a seed.

    `audio_channels=2` is the stereo variant (musicgen-stereo-*): the decoder predicts 2 x 4 codebooks,
    left and right interleaved, and the mono EnCodec decodes each channel's 4."""
    import torch
    from transformers import (
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
    )

    tokenizer = build_tokenizer()
    text = _tiny_text_config(tokenizer)
    audio = _tiny_audio_config()
    decoder = MusicgenDecoderConfig(
        vocab_size=CODEBOOK_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=4,
        num_codebooks=NUM_CODEBOOKS * audio_channels,
        audio_channels=audio_channels,
        max_position_embeddings=2048,
        pad_token_id=CODEBOOK_SIZE,
        bos_token_id=CODEBOOK_SIZE,
        decoder_start_token_id=CODEBOOK_SIZE,  # type: ignore[call-arg]  # accepted as **kwargs; not in the typed signature
    )
    config = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config)
        _randomize_codebooks(model, seed)
    finally:
        torch.random.set_rng_state(generator_state)
    configure_generation(model)
    processor = MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE),
        tokenizer=tokenizer,
    )
    model.eval()
    return model, processor


def _randomize_codebooks(model: Any, seed: int) -> None:
    """Random-init EnCodec codebooks are all zeros, which makes every code decode to silence."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            book = layer.codebook
            book.embed.copy_(torch.randn(book.embed.shape, generator=generator))
            if hasattr(book, "embed_avg"):
                book.embed_avg.copy_(book.embed)
            if hasattr(book, "cluster_size"):
                book.cluster_size.fill_(1.0)
            if hasattr(book, "inited"):
                book.inited.fill_(1.0)


def configure_generation(model: Any) -> None:
    """MusicGen's generation config needs the decoder's pad / start ids (random-init configs lack them)."""
    decoder = model.config.decoder
    gen = model.generation_config
    gen.decoder_start_token_id = decoder.decoder_start_token_id or decoder.bos_token_id
    gen.pad_token_id = decoder.pad_token_id
    gen.bos_token_id = decoder.bos_token_id


def build_tiny_musicgen_melody(seed: int = 0) -> tuple[Any, Any]:
    """Return (MusicgenMelodyForConditionalGeneration, MelodyProcessor), deterministic for a seed.

    MusicGen-melody's real architecture at toy size: a decoder-only model whose inputs are the
    12-bin chroma of a reference melody (projected, repeated/cut to `chroma_length` frames) and the
    T5 text states, prepended to the audio tokens (no cross-attention). The processor is
    torchaudio-free (`musicops.models.melody.MelodyProcessor`); its chroma is the real feature
    extractor's, computed with torch.stft.
    """
    import torch
    from transformers import (
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForConditionalGeneration,
    )

    from musicops.models.melody import MelodyFeatures, MelodyProcessor

    tokenizer = build_tokenizer()
    decoder = MusicgenMelodyDecoderConfig(
        vocab_size=CODEBOOK_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=4,
        num_codebooks=NUM_CODEBOOKS,
        max_position_embeddings=2048,
        pad_token_id=CODEBOOK_SIZE,
        bos_token_id=CODEBOOK_SIZE,
        decoder_start_token_id=CODEBOOK_SIZE,  # type: ignore[call-arg]  # accepted as **kwargs; not in the typed signature
    )
    config = MusicgenMelodyConfig(text_encoder=_tiny_text_config(tokenizer), audio_encoder=_tiny_audio_config(),
                                  decoder=decoder, num_chroma=12, chroma_length=235)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = MusicgenMelodyForConditionalGeneration(config)
        _randomize_codebooks(model, seed)
        # the chroma projection's default init (std 0.02) drowns a one-hot melody under the position
        # and text states (norm ~1): at unit scale a different melody makes a different clip
        with torch.no_grad():
            proj = model.audio_enc_to_dec_proj.weight
            proj.copy_(torch.randn(proj.shape, generator=torch.Generator().manual_seed(seed + 2)))
    finally:
        torch.random.set_rng_state(generator_state)
    configure_generation(model)
    model.eval()
    return model, MelodyProcessor(tokenizer, MelodyFeatures(sampling_rate=SAMPLE_RATE))
