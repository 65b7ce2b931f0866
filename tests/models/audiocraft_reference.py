"""Build a tiny audiocraft MusicGen checkpoint with audiocraft's own builders and generate with it.

Runs in the audiocraft virtual environment (`make .venv-audiocraft`), never in the main one:

    .venv-audiocraft/bin/python tests/models/audiocraft_reference.py TEXT_ENCODER_DIR OUT_DIR --prompt P --seed S

TEXT_ENCODER_DIR is a local T5 (weights + tokenizer). audiocraft's T5 conditioner only accepts hub
names, so the directory is laid out as an offline Hugging Face cache entry for `t5-small`; with
HF_HUB_OFFLINE=1 nothing is downloaded. Writes OUT_DIR/checkpoint/{state_dict.bin,
compression_state_dict.bin} in audiocraft's export format and OUT_DIR/reference.npz with the
greedy codes and audio audiocraft itself generates for each prompt; the same again with a T5
fine-tuned along the LM (its weights then live in state_dict.bin) under the suffix -t5-finetuned.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

T5_NAME = "t5-small"  # audiocraft checks the name against its list; its width (512) must match ours


def seed_offline_hub(text_encoder: Path, hf_home: Path) -> None:
    """Lay a local T5 out as the hub cache entry audiocraft's `from_pretrained(T5_NAME)` reads offline."""
    repo = hf_home / "hub" / f"models--{T5_NAME}"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(text_encoder, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)


def tiny_config(seed: int):
    """An audiocraft experiment config at toy size: MusicGen's layout (T5 cross-attention, delay
    pattern, SEANet EnCodec + RVQ) with the smallest sensible widths."""
    from omegaconf import OmegaConf

    return OmegaConf.create({
        "device": "cpu", "dtype": "float32", "sample_rate": 32000, "channels": 1, "seed": seed,
        "dataset": {"segment_duration": 2.0},
        "compression_model": "encodec",
        "encodec": {"autoencoder": "seanet", "quantizer": "rvq", "sample_rate": "${sample_rate}",
                    "channels": "${channels}", "causal": False, "renormalize": False},
        "seanet": {"dimension": 32, "channels": "${channels}", "causal": False, "n_filters": 4,
                   "n_residual_layers": 1, "ratios": [8, 5, 4, 4], "activation": "ELU",
                   "activation_params": {"alpha": 1.0}, "norm": "weight_norm", "norm_params": {},
                   "kernel_size": 7, "last_kernel_size": 7, "residual_kernel_size": 3, "dilation_base": 2,
                   "pad_mode": "constant", "true_skip": True, "compress": 2, "lstm": 2,
                   "disable_norm_outer_blocks": 0, "encoder": {},
                   "decoder": {"trim_right_ratio": 1.0, "final_activation": None,
                               "final_activation_params": None}},
        "rvq": {"n_q": 4, "q_dropout": False, "bins": 2048, "decay": 0.99, "kmeans_init": True,
                "kmeans_iters": 5, "threshold_ema_dead_code": 2, "orthogonal_reg_weight": 0.0,
                "orthogonal_reg_active_codes_only": False, "orthogonal_reg_max_codes": None},
        "lm_model": "transformer_lm",
        "transformer_lm": {"dim": 32, "num_heads": 4, "num_layers": 2, "hidden_scale": 4, "n_q": 4,
                           "card": 2048, "dropout": 0.0, "emb_lr": None, "activation": "gelu",
                           "norm_first": True, "bias_ff": False, "bias_attn": False, "bias_proj": False,
                           "past_context": None, "causal": True, "custom": True, "memory_efficient": False,
                           "attention_as_float32": False, "layer_scale": None, "positional_embedding": "sin",
                           "xpos": False, "checkpointing": "none", "weight_init": "gaussian",
                           "depthwise_init": "current", "zero_bias_init": True, "norm": "layer_norm",
                           "cross_attention": False, "qk_layer_norm": False, "qk_layer_norm_cross": False,
                           "attention_dropout": None, "kv_repeat": 1, "two_step_cfg": False},
        "codebooks_pattern": {"modeling": "delay", "delay": {"delays": [0, 1, 2, 3], "flatten_first": 0,
                                                            "empty_initial": 0}},
        "classifier_free_guidance": {"training_dropout": 0.2, "inference_coef": 3.0},
        "attribute_dropout": {},
        "fuser": {"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1,
                  "sum": [], "prepend": [], "cross": ["description"], "input_interpolate": []},
        "conditioners": {"description": {"model": "t5", "t5": {"name": T5_NAME, "finetune": False,
                                                                "word_dropout": 0.0, "normalize_text": False}}},
    })


def randomise_codebooks(compression, seed: int) -> None:
    """A fresh RVQ's codebooks are all zero until k-means runs on data: give each code its own vector."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in compression.quantizer.vq.layers:
            book = layer._codebook
            book.embed.copy_(torch.randn(book.embed.shape, generator=generator))
            book.embed_avg.copy_(book.embed)
            book.cluster_size.fill_(1.0)
            book.inited.fill_(1.0)


def export_and_generate(checkpoint: Path, reference: Path, prompts: list[str], seed: int, duration: float,
                        finetune_t5: bool) -> None:
    """Build, export in audiocraft's format, reload with audiocraft's loaders, generate greedily.

    With `finetune_t5` the T5 is trained along (audiocraft then saves its weights in the LM file);
    its weights are shifted so they differ from the hub copy, as a fine-tune's would.
    """
    import audiocraft
    import numpy as np
    import torch
    from audiocraft.models import builders
    from audiocraft.models.loaders import load_compression_model, load_lm_model
    from audiocraft.models.musicgen import MusicGen
    from omegaconf import OmegaConf

    torch.manual_seed(seed)
    cfg = tiny_config(seed)
    cfg.conditioners.description.t5.finetune = finetune_t5
    lm = builders.get_lm_model(cfg).eval()
    if finetune_t5:
        with torch.no_grad():
            for parameter in lm.condition_provider.conditioners["description"].t5.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
    compression = builders.get_compression_model(cfg).eval()
    randomise_codebooks(compression, seed)

    checkpoint.mkdir(parents=True, exist_ok=True)
    exported = {"xp.cfg": OmegaConf.to_yaml(cfg), "version": audiocraft.__version__, "exported": True}
    torch.save({**exported, "best_state": lm.state_dict()}, checkpoint / "state_dict.bin")
    torch.save({**exported, "best_state": compression.state_dict()}, checkpoint / "compression_state_dict.bin")

    # Generate from the files just written, through audiocraft's own loaders, as a user would.
    model = MusicGen("tiny", load_compression_model(checkpoint), load_lm_model(checkpoint), max_duration=30)
    model.set_generation_params(use_sampling=False, duration=duration, cfg_coef=3.0)
    codes, audio = [], []
    for prompt in prompts:
        torch.manual_seed(seed)
        wav, tokens = model.generate([prompt], progress=False, return_tokens=True)
        codes.append(tokens[0].numpy())
        audio.append(wav[0].numpy())
    np.savez(reference, codes=np.stack(codes), audio=np.stack(audio), prompts=np.array(prompts),
             audiocraft_version=audiocraft.__version__)
    print(f"audiocraft {audiocraft.__version__} {checkpoint.name}: {len(codes)} clips, codes {codes[0].shape}, "
          f"audio {audio[0].shape}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text_encoder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--prompt", action="append", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=1.0)
    args = parser.parse_args(argv)

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HOME"] = str(args.out / "hf-home")
    seed_offline_hub(args.text_encoder, args.out / "hf-home")

    import torch

    torch.set_num_threads(1)
    for variant, finetune_t5 in (("", False), ("-t5-finetuned", True)):
        export_and_generate(args.out / f"checkpoint{variant}", args.out / f"reference{variant}.npz",
                            args.prompt, args.seed, args.duration, finetune_t5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
