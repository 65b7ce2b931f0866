"""The fine-tuning loop: AdamW, gradient accumulation, clipping, AMP on CUDA, resumable checkpoints.

Only the MusicGen decoder (the language model over EnCodec codes) is trained; the T5 text encoder
and EnCodec stay frozen, as in audiocraft's recipe. LoRA (peft) is optional and merged back into
the weights at the end, so the saved model loads like any other.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from musicops.errors import MusicopsError
from musicops.training.checkpoint import load_latest, save_checkpoint
from musicops.training.data import EncodedDataset, delay_pattern_labels

StepCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class FineTuneConfig:
    steps: int = 20
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float | None = None  # None: by the decoder's size (training.planning.default_learning_rate)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    segment_s: float = 2.0
    seed: int = 0
    cond_dropout: float = 0.1  # drop text conditioning so classifier-free guidance has an unconditional mode
    checkpoint_every: int = 10
    amp: bool = True  # bf16 autocast, used on CUDA only
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: int = 16
    gradient_checkpointing: bool = False  # recompute decoder activations in backward: less memory, ~30 % slower
    optimizer: str = "adamw"  # adamw, adamw-fused (one kernel per step) or adamw-8bit (bitsandbytes)

    def __post_init__(self) -> None:
        from musicops.training.planning import OPTIMIZERS

        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.learning_rate is not None and not (0 < self.learning_rate < 1):
            raise ValueError(f"learning rate must be in (0, 1), got {self.learning_rate}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("steps, batch_size and grad_accum must be >= 1")
        if not 0 <= self.cond_dropout < 1:
            raise ValueError("cond_dropout must be in [0, 1)")
        if self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be >= 1")

    def fingerprint(self, data_hash: str) -> str:
        """What a checkpoint must match to be resumed (steps may grow; everything else may not)."""
        fields = {k: v for k, v in asdict(self).items() if k not in {"steps", "checkpoint_every"}}
        blob = json.dumps({"config": fields, "data": data_hash}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    steps_done: int = 0
    resumed_from: int | None = None


class CheckpointMismatchError(MusicopsError, RuntimeError):
    """A checkpoint directory holding a run with different settings or data."""


def data_fingerprint(data: EncodedDataset) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(data.captions).encode())
    digest.update(data.codes.numpy().tobytes())
    return digest.hexdigest()[:16]


def train(model: Any, data: EncodedDataset, config: FineTuneConfig, checkpoint_dir: Path | None = None,
          on_step: StepCallback | None = None) -> TrainResult:
    """Train `model` (a TransformersMusicGen) in place; resume from `checkpoint_dir` when it holds one."""
    import torch

    hf = model.model
    from musicops.training.planning import with_learning_rate

    config = with_learning_rate(config, hf)  # called directly: fine_tune() has decided it already
    device = model.device
    use_amp = config.amp and device.type == "cuda"
    _freeze_all_but_decoder(hf)
    if config.lora:
        hf = _attach_lora(model, config)
    if config.gradient_checkpointing:
        # use_reentrant=False: the frozen text encoder's outputs carry no grad, which reentrant checkpoints need
        hf.decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable = [p for p in hf.parameters() if p.requires_grad]
    optimizer = _optimizer(trainable, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, config.warmup_steps)) if config.warmup_steps else 1.0
    )
    tokens = model.processor.tokenizer(data.captions, padding=True, return_tensors="pt")
    pad_id = int(hf.config.decoder.pad_token_id)
    fingerprint = config.fingerprint(data_fingerprint(data))
    result = TrainResult()
    start = 0
    torch.manual_seed(config.seed)  # dropout draws: the same seed gives the same run
    if checkpoint_dir is not None and (state := load_latest(checkpoint_dir)) is not None:
        if state["fingerprint"] != fingerprint:
            raise CheckpointMismatchError(
                f"{checkpoint_dir} holds a checkpoint of a different run (settings or data changed); "
                "use a new run directory"
            )
        _load_trainable(hf, state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.random.set_rng_state(state["torch_rng"])
        result.losses = list(state["losses"])
        start = result.resumed_from = int(state["step"])
    hf.train()
    for step in range(start, config.steps):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(config.grad_accum):
            index = _batch_indices(len(data), config, step * config.grad_accum + micro)
            loss = _micro_step(hf, tokens, data, index, config, pad_id, device, use_amp,
                               step * config.grad_accum + micro)
            (loss / config.grad_accum).backward()
            total += float(loss.detach()) / config.grad_accum
        if not math.isfinite(total):
            raise FloatingPointError(f"loss became {total} at step {step + 1}; lower the learning rate")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm))
        optimizer.step()
        scheduler.step()
        result.losses.append(total)
        done = step + 1
        if on_step is not None:
            on_step(done, {"loss": total, "grad_norm": grad_norm, "lr": float(scheduler.get_last_lr()[0])})
        if checkpoint_dir is not None and (done % config.checkpoint_every == 0 or done == config.steps):
            save_checkpoint(checkpoint_dir, done, {
                "step": done, "fingerprint": fingerprint, "losses": result.losses,
                "trainable": _trainable_state(hf), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "torch_rng": torch.random.get_rng_state(),
            })
    hf.eval()
    if config.lora:
        model.model = hf.merge_and_unload()
    result.steps_done = config.steps
    return result


def _optimizer(trainable: list[Any], config: FineTuneConfig) -> Any:
    import torch

    assert config.learning_rate is not None  # train() resolves an unset rate first
    if config.optimizer == "adamw-8bit":
        try:
            import bitsandbytes  # type: ignore[import-not-found]
        except ImportError:
            raise ValueError("optimizer 'adamw-8bit' needs bitsandbytes (pip install bitsandbytes; CUDA only); "
                             "use adamw or adamw-fused") from None
        return bitsandbytes.optim.AdamW8bit(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay,
                             fused=config.optimizer == "adamw-fused" or None)


def _micro_step(hf: Any, tokens: Any, data: EncodedDataset, index: Any, config: FineTuneConfig,
                pad_id: int, device: Any, use_amp: bool, micro_index: int) -> Any:
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    input_ids = tokens["input_ids"][index].to(device)
    attention = tokens["attention_mask"][index].to(device)
    channels = int(getattr(hf.decoder.config, "audio_channels", 1))
    labels = delay_pattern_labels(data.codes[index], pad_id, channels).to(device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
        with torch.no_grad():
            hidden = _text_encoder(hf)(input_ids=input_ids, attention_mask=attention).last_hidden_state
        if config.cond_dropout > 0:
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + micro_index)
            keep = (torch.rand(hidden.shape[0], generator=gen) >= config.cond_dropout).to(device)
            hidden = hidden * keep[:, None, None].to(hidden.dtype)
        out = hf(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=attention,
                 labels=labels)
    return out.loss.float()


def _batch_indices(n: int, config: FineTuneConfig, micro_index: int) -> Any:
    """Deterministic epoch-wise shuffling keyed on the micro-step: resuming replays the same batches."""
    import torch

    size = min(config.batch_size, n)
    per_epoch = max(1, n // size)
    epoch, position = divmod(micro_index, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
    return order[position * size:(position + 1) * size]


def _text_encoder(hf: Any) -> Any:
    return hf.get_base_model().text_encoder if hasattr(hf, "get_base_model") else hf.text_encoder


def _freeze_all_but_decoder(hf: Any) -> None:
    for name, param in hf.named_parameters():
        param.requires_grad = name.startswith(("decoder.", "enc_to_dec_proj."))


def _attach_lora(model: Any, config: FineTuneConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=r".*decoder\.layers\.\d+\.(self_attn|encoder_attn)\.(q_proj|v_proj)")
    return get_peft_model(model.model, lora)


def _trainable_state(hf: Any) -> dict[str, Any]:
    return {n: p.detach().cpu().clone() for n, p in hf.named_parameters() if p.requires_grad}


def _load_trainable(hf: Any, state: dict[str, Any]) -> None:
    params = dict(hf.named_parameters())
    missing = [name for name in state if name not in params]
    if missing:
        raise CheckpointMismatchError(f"checkpoint has parameters this model lacks: {missing[:3]}")
    import torch

    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
