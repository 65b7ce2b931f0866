"""Convert a MusicGen checkpoint trained with Meta's audiocraft into a transformers MusicGen directory.

audiocraft exports a model as `state_dict.bin` (the LM, its text-conditioner projection and the
Hydra config as YAML) and `compression_state_dict.bin` (the EnCodec tokenizer, or a reference to a
pretrained one). Both are plain torch pickles of tensors and strings, so converting needs neither
audiocraft nor its pins: this module reads them with `torch.load(weights_only=True)`, checks that
the config describes the architecture transformers implements (T5 cross-attention, sinusoidal
positions, pre-norm, no biases, delay pattern, SEANet EnCodec with RVQ), renames the weights, and
writes a directory the default backend loads. Generation is then the default backend's, which the
test suite shows matches audiocraft's own greedy generation (docs/audiocraft.md).

audiocraft's T5 conditioner keeps the T5 weights out of the checkpoint (only its output projection
is saved), so the text encoder comes from a local directory (`text_encoder`) or the Hugging Face
hub under the name in the checkpoint's config (`musicops.models.hub`: the standard cache, downloaded
on first use, the cache only with HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicops.hashing import file_sha256
from musicops.models.musicgen import ModelLoadError

LM_FILE = "state_dict.bin"
CODEC_FILE = "compression_state_dict.bin"
ORIGIN_FILE = "audiocraft_origin.json"


class AudiocraftCheckpointError(ModelLoadError):
    """A checkpoint file that is missing, unreadable or of an architecture we cannot convert."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass
class AudiocraftPackage:
    """One exported audiocraft file: its weights, its (resolved) config and where it came from."""

    path: Path
    state: dict[str, Any]
    cfg: dict[str, Any]
    version: str
    sha256: str
    pretrained: str | None = None  # compression files may only name a pretrained codec


@dataclass
class Conversion:
    """The converted directory and the origin facts to record with it."""

    directory: Path
    origin: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ reading
def read_package(path: Path) -> AudiocraftPackage:
    """Load one exported file; every failure names the file."""
    import torch

    if not path.is_file():
        raise AudiocraftCheckpointError(path, "missing; an audiocraft MusicGen export has "
                                              f"{LM_FILE} and {CODEC_FILE}")
    try:
        try:  # memory-map: a 3.3B-parameter LM need not sit in RAM twice while converting
            package = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # only the legacy (pre-zip) format cannot be memory-mapped
                raise
            package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch each raise their own types for a bad file
        raise AudiocraftCheckpointError(path, f"corrupt or not a torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(package, dict):
        raise AudiocraftCheckpointError(path, f"holds a {type(package).__name__}, not an audiocraft export dict")
    version = str(package.get("version", "unknown"))
    digest = file_sha256(path)
    if "pretrained" in package:
        return AudiocraftPackage(path, {}, {}, version, digest, pretrained=str(package["pretrained"]))
    missing = [key for key in ("best_state", "xp.cfg") if key not in package]
    if missing:
        raise AudiocraftCheckpointError(path, f"not an audiocraft export: no {', '.join(missing)} "
                                              f"(keys: {', '.join(map(str, package))})")
    state = package["best_state"]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise AudiocraftCheckpointError(path, "best_state is not a state dict of tensors")
    return AudiocraftPackage(path, state, parse_config(path, package["xp.cfg"]), version, digest)


def parse_config(path: Path, raw: Any) -> dict[str, Any]:
    """The Hydra config as exported (OmegaConf YAML, `${a.b}` interpolations unresolved)."""
    import yaml

    if isinstance(raw, dict):
        cfg = raw
    else:
        try:
            cfg = yaml.safe_load(str(raw))
        except yaml.YAMLError as exc:
            raise AudiocraftCheckpointError(path, f"xp.cfg is not valid YAML ({exc})") from exc
    if not isinstance(cfg, dict):
        raise AudiocraftCheckpointError(path, "xp.cfg is not a mapping")
    return _resolve(cfg, cfg)


_INTERPOLATION = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


def _resolve(node: Any, root: dict[str, Any], depth: int = 0) -> Any:
    """Resolve whole-value `${dotted.key}` interpolations (the only kind audiocraft's configs use here)."""
    if depth > 20:
        return node
    if isinstance(node, dict):
        return {key: _resolve(value, root, depth) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(value, root, depth) for value in node]
    if isinstance(node, str) and (match := _INTERPOLATION.match(node)):
        target: Any = root
        for part in match.group(1).split("."):
            if not isinstance(target, dict) or part not in target:
                return node
            target = target[part]
        return _resolve(target, root, depth + 1)
    return node


# ------------------------------------------------------- architecture checks
def _get(cfg: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def text_conditioner(package: AudiocraftPackage) -> tuple[str, dict[str, Any]]:
    """The single T5 text conditioner a text-to-music MusicGen has; anything else is refused."""
    cfg = package.cfg
    fuser = cfg.get("fuser") or {}
    cross = list(fuser.get("cross") or [])
    other = {method: list(fuser.get(method) or []) for method in ("prepend", "sum", "input_interpolate")}
    if len(cross) != 1 or any(other.values()):
        raise AudiocraftCheckpointError(
            package.path, f"conditions fused as cross={cross} {other}; transformers MusicGen has exactly one "
                          "text condition by cross-attention (melody/chroma, CLAP and style models do not convert)")
    name = cross[0]
    conditioner = (cfg.get("conditioners") or {}).get(name) or {}
    kind = conditioner.get("model")
    if kind != "t5":
        raise AudiocraftCheckpointError(package.path, f"conditioner {name!r} is {kind!r}; transformers MusicGen "
                                                      "encodes text with T5 only")
    if _get(fuser, "cross_attention_pos_emb", False):
        raise AudiocraftCheckpointError(package.path, "fuser.cross_attention_pos_emb is on; transformers "
                                                      "MusicGen adds no positions to the text states")
    return name, conditioner.get("t5") or {}


_LM_REQUIREMENTS = {
    "positional_embedding": "sin", "norm": "layer_norm", "norm_first": True, "bias_ff": False,
    "bias_attn": False, "bias_proj": False, "layer_scale": None, "xpos": False, "qk_layer_norm": False,
    "qk_layer_norm_cross": False, "kv_repeat": 1, "activation": "gelu", "max_period": 10000,
    "positional_scale": 1.0,
}


def check_lm(package: AudiocraftPackage) -> dict[str, Any]:
    """The transformer settings transformers' MusicGen decoder hard-codes; returns `transformer_lm`."""
    lm_model = package.cfg.get("lm_model", "transformer_lm")
    if lm_model != "transformer_lm":
        raise AudiocraftCheckpointError(package.path, f"lm_model is {lm_model!r}; only MusicGen's "
                                                      "'transformer_lm' converts (MAGNeT and others do not)")
    lm = package.cfg.get("transformer_lm")
    if not isinstance(lm, dict):
        raise AudiocraftCheckpointError(package.path, "xp.cfg has no transformer_lm section: not a MusicGen LM "
                                                      f"(is this the {CODEC_FILE}?)")
    wrong = [f"{key}={lm.get(key, want)!r} (need {want!r})" for key, want in _LM_REQUIREMENTS.items()
             if lm.get(key, want) != want]
    n_q = int(lm.get("n_q", 0))
    pattern = package.cfg.get("codebooks_pattern") or {}
    delays = _get(pattern, "delay.delays", list(range(n_q)))
    if pattern.get("modeling", "delay") != "delay" or list(delays) != list(range(n_q)):
        wrong.append(f"codebooks_pattern={pattern.get('modeling')!r} delays={delays} (need delay 0..{n_q - 1})")
    if _get(pattern, "delay.flatten_first", 0) or _get(pattern, "delay.empty_initial", 0):
        wrong.append("delay pattern with flatten_first/empty_initial")
    if _get(package.cfg, "interleave_stereo_codebooks.use", False):
        wrong.append("stereo interleaved codebooks")
    if wrong:
        raise AudiocraftCheckpointError(package.path, "LM architecture differs from transformers MusicGen: "
                                                      + "; ".join(wrong))
    return lm


def check_codec(package: AudiocraftPackage) -> dict[str, Any]:
    """EnCodec settings transformers' EncodecModel can express; returns the matching EncodecConfig kwargs."""
    cfg = package.cfg
    encodec = cfg.get("encodec") or {}
    seanet = cfg.get("seanet") or {}
    rvq = cfg.get("rvq") or {}
    if cfg.get("compression_model") != "encodec" or encodec.get("autoencoder") != "seanet" \
            or encodec.get("quantizer") != "rvq":
        raise AudiocraftCheckpointError(package.path, f"compression model {cfg.get('compression_model')!r} "
                                                      f"({encodec.get('autoencoder')}/{encodec.get('quantizer')}) "
                                                      "is not EnCodec with SEANet + RVQ")
    merged_decoder = {**seanet, **(seanet.get("decoder") or {})}
    wrong = []
    if seanet.get("norm", "none") != "weight_norm":
        wrong.append(f"seanet.norm={seanet.get('norm')!r} (need 'weight_norm')")
    if seanet.get("activation", "ELU") != "ELU" or _get(seanet, "activation_params.alpha", 1.0) != 1.0:
        wrong.append("activation other than ELU(alpha=1)")
    if merged_decoder.get("final_activation"):
        wrong.append(f"decoder final_activation={merged_decoder.get('final_activation')!r}")
    if seanet.get("disable_norm_outer_blocks", 0):
        wrong.append("disable_norm_outer_blocks")
    if seanet.get("encoder") or {k: v for k, v in (seanet.get("decoder") or {}).items()
                                 if k not in ("trim_right_ratio", "final_activation", "final_activation_params")}:
        wrong.append("encoder/decoder-specific SEANet overrides")
    dimension = int(seanet.get("dimension", 128))
    if rvq.get("dimension", dimension) != dimension or rvq.get("codebook_dim") not in (None, dimension):
        wrong.append("RVQ codebook projection (codebook_dim != dimension)")
    ratios = [int(r) for r in seanet.get("ratios", [8, 5, 4, 2])]
    sample_rate = int(encodec.get("sample_rate", cfg.get("sample_rate", 32000)))
    hop = math.prod(ratios)
    if sample_rate % hop:
        wrong.append(f"frame rate {sample_rate}/{hop} is not whole")
    channels = int(encodec.get("channels", cfg.get("channels", 1)))
    if channels != 1:
        wrong.append(f"{channels} audio channels (stereo MusicGen is not converted)")
    if wrong:
        raise AudiocraftCheckpointError(package.path, "EnCodec differs from transformers' EncodecModel: "
                                                      + "; ".join(wrong))
    n_q, bins = int(rvq.get("n_q", 8)), int(rvq.get("bins", 1024))
    frame_rate = sample_rate // hop
    return {
        "sampling_rate": sample_rate, "audio_channels": channels,
        "normalize": bool(encodec.get("renormalize", False)), "hidden_size": dimension,
        "num_filters": int(seanet.get("n_filters", 32)), "num_residual_layers": int(seanet.get("n_residual_layers", 3)),
        "upsampling_ratios": ratios, "norm_type": "weight_norm", "kernel_size": int(seanet.get("kernel_size", 7)),
        "last_kernel_size": int(seanet.get("last_kernel_size", 7)),
        "residual_kernel_size": int(seanet.get("residual_kernel_size", 3)),
        "dilation_growth_rate": int(seanet.get("dilation_base", 2)), "use_causal_conv": bool(seanet.get("causal", False)),
        "pad_mode": str(seanet.get("pad_mode", "reflect")), "compress": int(seanet.get("compress", 2)),
        "num_lstm_layers": int(seanet.get("lstm", 0)), "trim_right_ratio": float(merged_decoder.get("trim_right_ratio", 1.0)),
        "codebook_size": bins, "use_conv_shortcut": not bool(seanet.get("true_skip", True)),
        "target_bandwidths": [n_q * math.log2(bins) * frame_rate / 1000],
    }


# -------------------------------------------------------------- key mapping
_LM_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.(.+)$")
_LM_RENAMES = {"linear1.weight": "fc1.weight", "linear2.weight": "fc2.weight",
               "norm1.weight": "self_attn_layer_norm.weight", "norm1.bias": "self_attn_layer_norm.bias",
               "norm_cross.weight": "encoder_attn_layer_norm.weight", "norm_cross.bias": "encoder_attn_layer_norm.bias",
               "norm2.weight": "final_layer_norm.weight", "norm2.bias": "final_layer_norm.bias",
               "self_attn.out_proj.weight": "self_attn.out_proj.weight",
               "cross_attention.out_proj.weight": "encoder_attn.out_proj.weight"}


def convert_lm_state(package: AudiocraftPackage, conditioner: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(decoder + projection weights in transformers' names, fine-tuned T5 weights if any)."""
    if any(key.startswith(("encoder.model.", "quantizer.vq.")) for key in package.state):
        raise AudiocraftCheckpointError(package.path, f"holds EnCodec weights, not the MusicGen LM (is this the "
                                                      f"{CODEC_FILE}?)")
    prefix = f"condition_provider.conditioners.{conditioner}."
    out: dict[str, Any] = {}
    t5: dict[str, Any] = {}
    unknown = []
    for key, value in package.state.items():
        key = key.replace(".mha.", ".")  # audiocraft's non-custom attention wraps nn.MultiheadAttention
        if key.startswith(prefix + "output_proj."):
            out["enc_to_dec_proj." + key.removeprefix(prefix + "output_proj.")] = value
        elif key.startswith(prefix + "t5."):
            t5[key.removeprefix(prefix + "t5.")] = value
        elif match := re.fullmatch(r"emb\.(\d+)\.weight", key):
            out[f"decoder.model.decoder.embed_tokens.{match.group(1)}.weight"] = value
        elif match := re.fullmatch(r"linears\.(\d+)\.weight", key):
            out[f"decoder.lm_heads.{match.group(1)}.weight"] = value
        elif key.startswith("out_norm."):
            out["decoder.model.decoder.layer_norm." + key.removeprefix("out_norm.")] = value
        elif match := _LM_LAYER.match(key):
            layer, rest = f"decoder.model.decoder.layers.{match.group(1)}.", match.group(2)
            if rest in ("self_attn.in_proj_weight", "cross_attention.in_proj_weight"):
                target = "self_attn" if rest.startswith("self") else "encoder_attn"
                for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                    out[f"{layer}{target}.{name}_proj.weight"] = part.clone()
            elif rest in _LM_RENAMES:
                out[layer + _LM_RENAMES[rest]] = value
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise AudiocraftCheckpointError(package.path, f"{len(unknown)} weights transformers MusicGen has no place "
                                                      f"for (first: {', '.join(unknown[:4])})")
    return out, t5


def convert_codec_state(package: AudiocraftPackage) -> dict[str, Any]:
    """EnCodec weights in transformers' names (`audio_encoder.` prefix, weight-norm parametrizations)."""
    out: dict[str, Any] = {}
    unknown = []
    for key, value in package.state.items():
        new = key
        if match := re.fullmatch(r"quantizer\.vq\.layers\.(\d+)\._codebook\.(\w+)", key):
            new = f"quantizer.layers.{match.group(1)}.codebook.{match.group(2)}"
        elif key.startswith(("encoder.model.", "decoder.model.")):
            new = key.replace(".model.", ".layers.", 1).replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".conv.")
            new = new.replace(".weight_g", ".parametrizations.weight.original0")
            new = new.replace(".weight_v", ".parametrizations.weight.original1")
        else:
            unknown.append(key)
            continue
        out["audio_encoder." + new] = value
    if unknown:
        raise AudiocraftCheckpointError(package.path, f"{len(unknown)} weights EnCodec has no place for "
                                                      f"(first: {', '.join(unknown[:4])})")
    return out


# ------------------------------------------------------------- conversion
def _text_encoder_source(t5_cfg: dict[str, Any], text_encoder: Path | None, lm_path: Path) -> Path:
    """A local T5 directory: the one given, or the checkpoint's T5 name in the offline HF cache."""
    if text_encoder is not None:
        if not (Path(text_encoder) / "config.json").is_file():
            raise ModelLoadError(f"{text_encoder}: not a transformers T5 directory (no config.json)")
        return Path(text_encoder)
    name = str(t5_cfg.get("name", "t5-base"))
    from musicops.models.hub import HubModelNotFoundError, HubRef, parse_hub_id, snapshot

    # audiocraft names T5 by hub id ("t5-base", or "google-t5/t5-base"); a bare name is a hub id too here
    ref = parse_hub_id(name) or HubRef(name)
    try:
        # through the hub module: the HF cache as the environment names it now, HF_HUB_OFFLINE respected
        # (download on first use online); a name that is not cached offline is the clear error below
        return snapshot(ref).directory
    except (HubModelNotFoundError, ValueError) as exc:  # not cached (offline), or not on the hub: say what to pass
        raise AudiocraftCheckpointError(
            lm_path, f"its text conditioner is T5 {name!r}, whose weights audiocraft does not store in "
                     f"{LM_FILE}; pass --text-encoder DIR (a local copy of {name}) ({exc})") from exc


def convert_checkpoint(directory: str | Path, out_dir: str | Path, text_encoder: str | Path | None = None,
                       codec: str | Path | None = None) -> Conversion:
    """Convert an audiocraft export directory into a transformers MusicGen directory at `out_dir`.

    `codec` is a local transformers EnCodec directory, needed only when the compression file names a
    pretrained codec (e.g. facebook/encodec_32khz) instead of holding weights. Nothing is written
    to `out_dir` unless the whole conversion succeeds.
    """
    directory, out_dir = Path(directory), Path(out_dir)
    if not directory.is_dir():
        raise ModelLoadError(f"{directory}: not a directory (expected an audiocraft export with {LM_FILE} "
                             f"and {CODEC_FILE})")
    lm_pkg = read_package(directory / LM_FILE)
    if lm_pkg.pretrained:
        raise AudiocraftCheckpointError(lm_pkg.path, f"names pretrained model {lm_pkg.pretrained!r} instead of "
                                                     "holding LM weights")
    codec_pkg = read_package(directory / CODEC_FILE)
    lm_cfg = check_lm(lm_pkg)
    conditioner, t5_cfg = text_conditioner(lm_pkg)
    decoder_state, t5_state = convert_lm_state(lm_pkg, conditioner)

    import torch
    from transformers import (
        AutoTokenizer,
        EncodecConfig,
        EncodecFeatureExtractor,
        EncodecModel,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
        T5EncoderModel,
    )

    from musicops.models.musicgen import _quiet_transformers
    from musicops.models.tiny import configure_generation

    text_dir = _text_encoder_source(t5_cfg, Path(text_encoder) if text_encoder else None, lm_pkg.path)
    with _quiet_transformers():
        try:
            text_model = T5EncoderModel.from_pretrained(text_dir, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(text_dir, local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"{text_dir}: cannot load the T5 text encoder ({type(exc).__name__}: {exc})") from exc
        if t5_state:  # the T5 was fine-tuned with the LM: its weights are in the checkpoint
            _load_exact(text_model, t5_state, lm_pkg.path, "fine-tuned T5")
        if codec_pkg.pretrained:
            if codec is None:
                raise AudiocraftCheckpointError(codec_pkg.path, f"names the pretrained codec {codec_pkg.pretrained!r} "
                                                                "instead of holding its weights; pass --codec DIR "
                                                                "(a local transformers copy of it)")
            try:
                codec_model = EncodecModel.from_pretrained(codec, local_files_only=True)
            except Exception as exc:
                raise ModelLoadError(f"{codec}: cannot load the EnCodec model ({type(exc).__name__}: {exc})") from exc
            audio_config, codec_state = codec_model.config, {"audio_encoder." + k: v
                                                             for k, v in codec_model.state_dict().items()}
        else:
            audio_config = EncodecConfig(**check_codec(codec_pkg))
            codec_state = convert_codec_state(codec_pkg)
        output_dim = int(decoder_state.get("enc_to_dec_proj.weight", torch.empty(0, 0)).shape[-1])
        if text_model.config.d_model != output_dim:
            raise ModelLoadError(f"{text_dir}: T5 width {text_model.config.d_model} does not match the checkpoint's "
                                 f"projection input {output_dim} ({lm_pkg.path})")
        n_q, dim = int(lm_cfg["n_q"]), int(lm_cfg["dim"])
        if text_model.config.d_model == dim:
            raise AudiocraftCheckpointError(lm_pkg.path, "T5 width equals the LM width: transformers MusicGen "
                                                         "would skip audiocraft's output projection")
        if audio_config.num_quantizers != n_q or audio_config.codebook_size != int(lm_cfg["card"]):
            raise AudiocraftCheckpointError(codec_pkg.path, f"codec has {audio_config.num_quantizers} codebooks of "
                                                            f"{audio_config.codebook_size}; the LM expects {n_q} "
                                                            f"of {lm_cfg['card']}")
        card = int(lm_cfg["card"])
        decoder_config = MusicgenDecoderConfig(
            vocab_size=card, hidden_size=dim, num_hidden_layers=int(lm_cfg["num_layers"]),
            ffn_dim=dim * int(lm_cfg.get("hidden_scale", 4)), num_attention_heads=int(lm_cfg["num_heads"]),
            num_codebooks=n_q, audio_channels=1, max_position_embeddings=2048, activation_function="gelu",
            dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0, scale_embedding=False,
            pad_token_id=card, bos_token_id=card, decoder_start_token_id=card, tie_word_embeddings=False,  # type: ignore[call-arg]  # accepted as **kwargs
        )
        config = MusicgenConfig(text_encoder=text_model.config, audio_encoder=audio_config, decoder=decoder_config)
        model = MusicgenForConditionalGeneration(config)
        model.text_encoder.load_state_dict(text_model.state_dict())
        _load_exact(model, {**decoder_state, **codec_state}, lm_pkg.path, "MusicGen", skip=("text_encoder.",))
    configure_generation(model)
    model.generation_config.guidance_scale = float(_get(lm_pkg.cfg, "classifier_free_guidance.inference_coef", 3.0))
    model.eval()
    processor = MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(feature_size=audio_config.audio_channels,
                                                  sampling_rate=audio_config.sampling_rate),
        tokenizer=tokenizer)
    origin = {
        "format": "audiocraft", "audiocraft_version": lm_pkg.version, "codec_audiocraft_version": codec_pkg.version,
        "checkpoint": str(directory.resolve()),
        "sha256": {LM_FILE: lm_pkg.sha256, CODEC_FILE: codec_pkg.sha256},
        "text_encoder": {"name": str(t5_cfg.get("name", "")), "source": str(text_dir),
                         "fine_tuned_in_checkpoint": bool(t5_state)},
        "codec": codec_pkg.pretrained or "in checkpoint",
        "cfg_coef": model.generation_config.guidance_scale,
    }
    staging = Path(tempfile.mkdtemp(prefix=".audiocraft-", dir=_parent(out_dir)))
    try:
        with _quiet_transformers():
            model.save_pretrained(staging)
            processor.save_pretrained(staging)
        (staging / ORIGIN_FILE).write_text(json.dumps(origin, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Conversion(out_dir, origin)


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def _load_exact(model: Any, state: dict[str, Any], source: Path, what: str, skip: tuple[str, ...] = ()) -> None:
    """Load weights demanding every expected tensor is present with its shape; names the file otherwise."""
    expected = {key: value for key, value in model.state_dict().items()
                if not key.startswith(skip) and not key.endswith("embed_positions.weights")}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}" for key, value in expected.items()
              if key in state and tuple(state[key].shape) != tuple(value.shape)]
    if missing or extra or shapes:
        details = "; ".join(part for part in (
            f"missing {', '.join(missing[:4])}" if missing else "",
            f"unexpected {', '.join(extra[:4])}" if extra else "",
            f"shape {', '.join(shapes[:3])}" if shapes else "") if part)
        raise AudiocraftCheckpointError(source, f"weights do not fit the {what} architecture its config describes "
                                                f"({details})")
    model.load_state_dict(state, strict=False)
