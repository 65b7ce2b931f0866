"""Before training starts: the settings that depend on the model's size, a memory estimate, and a
check of the encoded data.

A learning rate that suits a 0.5 M-parameter toy decoder (1e-3) wrecks a pretrained 420 M one; a
run that will not fit in memory should say so before it loads the optimiser; and when EnCodec maps
every clip to the same code per codebook (random codec weights, silent audio) the loss is
meaningless, which nothing else would reveal.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# (largest trainable decoder size, AdamW learning rate): toy decoders learn fast; pretrained
# MusicGen decoders (small 420 M, medium 1.5 B, large 3.3 B) are fine-tuned at 1e-5, as in
# audiocraft's fine-tuning recipes. LoRA trains only small adapters: 1e-4 whatever the size.
LEARNING_RATE_BY_SIZE: tuple[tuple[float, float], ...] = ((20e6, 1e-3), (200e6, 1e-4), (math.inf, 1e-5))
LORA_LEARNING_RATE = 1e-4
OPTIMIZERS = ("adamw", "adamw-fused", "adamw-8bit")
GIB = 1024 ** 3


def decoder_parameters(hf: Any) -> int:
    """Parameters full fine-tuning trains: the decoder and the text-to-decoder projection."""
    return sum(p.numel() for name, p in hf.named_parameters() if name.startswith(("decoder.", "enc_to_dec_proj.")))


def default_learning_rate(n_trainable: int, lora: bool) -> float:
    if lora:
        return LORA_LEARNING_RATE
    return next(rate for limit, rate in LEARNING_RATE_BY_SIZE if n_trainable <= limit)


def with_learning_rate(config: Any, hf: Any) -> Any:
    """`config` (a FineTuneConfig) with an unset learning rate decided by the decoder's size."""
    if config.learning_rate is not None:
        return config
    from dataclasses import replace

    return replace(config, learning_rate=default_learning_rate(decoder_parameters(hf), config.lora))


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak training memory, by part (bytes). An estimate: allocator overhead and the text encoder's
    activations are not counted, so treat it as a floor."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def describe(self) -> str:
        parts = ", ".join(f"{name} {value / GIB:.2f}" for name, value in asdict(self).items())
        return f"estimated peak memory {self.total / GIB:.2f} GiB ({parts} GiB)"


def estimate_memory(hf: Any, batch_size: int, frames: int, lora: bool, optimizer: str,
                    gradient_checkpointing: bool) -> MemoryEstimate:
    """Weights as stored, fp32 gradients and AdamW states for what trains (8-bit states: 2 bytes per
    parameter), and decoder activations kept for the backward pass: per layer about 18 values of
    batch x frames x hidden (attention, MLP, norms; Korthikanti et al. 2022, fp32), or only each
    layer's input plus one layer's worth with gradient checkpointing."""
    weights = sum(p.numel() * p.element_size() for p in hf.parameters())
    n_train = decoder_parameters(hf)
    if lora:  # adapters on q/v of every decoder attention: a fraction of a percent of the decoder
        n_train = max(1, n_train // 200)
    config = hf.decoder.config
    layers, hidden = int(config.num_hidden_layers), int(config.hidden_size)
    per_layer = batch_size * frames * hidden * 4
    activations = (layers + 18) * per_layer if gradient_checkpointing else layers * 18 * per_layer
    state_bytes = 2 if optimizer == "adamw-8bit" else 8
    return MemoryEstimate(weights, n_train * 4, n_train * state_bytes, activations)


def degenerate_codes(codes: Any) -> str | None:
    """A warning when the encoded training data has (almost) no variety: at most two distinct codes
    in every codebook across all clips. Returns None for usable data."""
    import torch

    codes = torch.as_tensor(codes)
    per_codebook = [int(torch.unique(codes[:, k]).numel()) for k in range(codes.shape[1])]
    if max(per_codebook) > 2:
        return None
    return (f"the training clips encode to {max(per_codebook)} distinct code(s) per codebook at most "
            f"({per_codebook} over {codes.shape[0]} clip(s)): the codec has random weights or the audio is "
            "silent, so the loss measures nothing musical")
