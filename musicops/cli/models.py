"""`musicops models ...`: generate clips, fine-tune and register."""

from __future__ import annotations

from pathlib import Path

import typer

from musicops.cli.common import console, err_console, fail

app = typer.Typer(no_args_is_help=True)

REVISION_HELP = ("Hub revision (branch, tag or commit sha) of a hub id; the commit it resolves to is recorded. "
                 "Same as MODEL@REVISION.")


@app.command("generate")
def generate(
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Text prompt (repeat for several clips)."),
    model: str = typer.Option("musicgen-tiny", help="musicgen-tiny, a local model dir, models:/NAME@ALIAS, or a "
                                                    "hub id such as facebook/musicgen-small[@REVISION]."),
    revision: str = typer.Option(None, "--revision", help=REVISION_HELP),
    duration: float = typer.Option(2.0, help="Seconds of audio per clip."),
    seed: int = typer.Option(0, help="Seed of the first clip; the next clips use seed+1, seed+2, ..."),
    out: Path = typer.Option(Path("out"), help="Copy the clips that pass their checks here."),
    precision: str = typer.Option("fp32", help="Decoder precision: fp32, bf16 or int8 (see `generate batch`)."),
    melody: Path = typer.Option(None, help="Reference audio for a MusicGen-melody model (musicgen-melody-tiny or "
                                           "a melody checkpoint): its chroma conditions every clip."),
) -> None:
    """Generate one clip per prompt (through the batch machinery: cache, post-processing, provenance)."""
    from musicops.cli.generate import generate_prompts

    generate_prompts(prompt, _with_revision(model, revision), duration, seed, out, precision, melody)



def _with_revision(reference: str, revision: str | None) -> str:
    from musicops.models.hub import with_revision

    try:
        return with_revision(reference, revision)
    except ValueError as exc:
        fail(str(exc), 2)


@app.command("fine-tune")
def fine_tune_cmd(
    manifest: str = typer.Argument(..., help="Manifest: parquet path, version dir, or NAME[@vN]."),
    base: str = typer.Option("musicgen-tiny", help="Base model reference (preset, dir, models:/..., or a hub id "
                                                  "such as facebook/musicgen-small)."),
    revision: str = typer.Option(None, "--revision", help=REVISION_HELP),
    name: str = typer.Option("", help="Registered model name (default: MUSICOPS_MODEL_NAME)."),
    steps: int = typer.Option(20), batch_size: int = typer.Option(4),
    lr: float = typer.Option(None, help="AdamW learning rate (default: by decoder size: 1e-3 up to 20 M "
                             "parameters, 1e-4 up to 200 M, 1e-5 above, e.g. MusicGen-small; 1e-4 with --lora)."),
    grad_accum: int = typer.Option(1), segment: float = typer.Option(2.0, help="Seconds of audio per example."),
    seed: int = typer.Option(0), checkpoint_every: int = typer.Option(10), lora: bool = typer.Option(False),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing",
                                                help="Recompute decoder activations in backward (less memory)."),
    optimizer: str = typer.Option("adamw", help="adamw, adamw-fused (fewer memory passes) or adamw-8bit "
                                  "(bitsandbytes, CUDA)."),
    keep_run_dir: bool = typer.Option(False, "--keep-run-dir",
                                      help="Keep the run folder's copy of the weights (MLflow keeps one)."),
) -> None:
    """Fine-tune a base model on a validated manifest, log it to MLflow and register a new version."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from musicops.config import get_settings
    from musicops.registry import hub_version_tags
    from musicops.training.finetune import FineTuneConfig
    from musicops.training.run import TAG_PREFIX, fine_tune, register_model

    base = _with_revision(base, revision)
    settings = get_settings()
    try:
        config = FineTuneConfig(steps=steps, batch_size=batch_size, learning_rate=lr, grad_accum=grad_accum,
                                segment_s=segment, seed=seed, checkpoint_every=checkpoint_every, lora=lora,
                                gradient_checkpointing=gradient_checkpointing, optimizer=optimizer)
    except ValueError as exc:
        fail(str(exc), 2)

    def show_plan(plan: dict) -> None:
        source = "by decoder size" if plan["learning_rate_chosen"] else "as given"
        console.print(f"{plan['decoder_parameters']:,} decoder parameters; learning rate {plan['learning_rate']:g} "
                      f"({source}); {plan['memory'].describe()}")
        for warning in plan["warnings"]:
            err_console.print(f"[bold yellow]warning:[/] {warning}")

    with Progress(TextColumn("fine-tune"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]}"),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("train", total=steps, loss="-")
        try:
            outcome = fine_tune(manifest, base, config, settings, keep_run_dir=keep_run_dir, on_plan=show_plan,
                                on_step=lambda s, m: progress.update(task, completed=s, loss=f"{m['loss']:.3f}"))
        except (ValueError, FileNotFoundError, LookupError) as exc:
            fail(str(exc), 2)
    # a hub base: its repo id and commit sha also as their own version tags (musicops.hub.*)
    tags = {**outcome.tags, **hub_version_tags(outcome.tags.get(f"{TAG_PREFIX}base_model"))}
    version = register_model(outcome.model_uri, name or settings.registered_model_name, tags, settings)
    console.print(f"loss {outcome.losses[0]:.3f} -> {outcome.losses[-1]:.3f} in {outcome.seconds:.1f}s"
                  + (f" (resumed from step {outcome.resumed_from})" if outcome.resumed_from else ""))
    console.print(f"MLflow run {outcome.run_id}; registered models:/{name or settings.registered_model_name}/{version}")


@app.command("import")
def import_cmd(
    directory: str = typer.Argument(..., help="A local MusicGen directory (config.json, weights, processor), or a "
                                              "hub id such as facebook/musicgen-small[@REVISION]."),
    name: str = typer.Option("", help="Registered model name (default: MUSICOPS_MODEL_NAME)."),
    licence: str = typer.Option("", help="Licence of the weights (read from README.md front matter if empty)."),
    revision: str = typer.Option(None, "--revision", help=REVISION_HELP),
) -> None:
    """Register existing MusicGen weights (a local directory, or a hub id through the HF cache)."""
    from musicops.config import get_settings
    from musicops.models.hub import is_hub_id
    from musicops.models.loading import resolve_model
    from musicops.models.musicgen import ModelLoadError
    from musicops.registry import hub_version_tags
    from musicops.training.run import TAG_PREFIX, import_model_dir

    settings = get_settings()
    target = name or settings.registered_model_name
    reference = _with_revision(directory, revision)
    extra: dict[str, str] = {}
    staging: Path | None = None
    if is_hub_id(reference):  # the snapshot directory is what registers; the pinned id and commit are tagged
        resolved = resolve_model(reference, settings)
        extra = {f"{TAG_PREFIX}base_model": resolved.pinned_uri, **hub_version_tags(resolved.pinned_uri)}
        staging = _materialised(Path(resolved.reference), settings.ensure().home / "imports")
        reference = str(staging)
    try:
        version = import_model_dir(reference, target, settings, licence or None, extra_tags=extra or None)
    except (ModelLoadError, ValueError) as exc:
        fail(str(exc), 2)
    finally:
        if staging is not None:  # MLflow holds the registered copy now: keep one copy per version
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    console.print(f"registered models:/{target}/{version}")


def _materialised(snapshot: Path, folder: Path) -> Path:
    """A hub snapshot as plain files in a fresh folder: its entries are symlinks into the cache's
    blobs, which MLflow refuses to log (paths outside the artifact directory). Removed once logged."""
    import shutil
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix="hub-"))
    shutil.copytree(snapshot, staging, symlinks=False, dirs_exist_ok=True)
    return staging


@app.command("import-audiocraft")
def import_audiocraft_cmd(
    directory: Path = typer.Argument(..., help="An audiocraft export: state_dict.bin + compression_state_dict.bin."),
    name: str = typer.Option("", help="Registered model name (default: MUSICOPS_MODEL_NAME)."),
    licence: str = typer.Option("", help="Licence of the weights (read from the directory's README.md if empty; "
                                         "Meta's MusicGen weights are CC-BY-NC-4.0)."),
    text_encoder: Path | None = typer.Option(None, "--text-encoder", help="Local T5 directory (audiocraft keeps T5 "
                                             "out of its checkpoints); default: the offline Hugging Face cache."),
    codec: Path | None = typer.Option(None, help="Local transformers EnCodec directory, when the checkpoint only "
                                                 "names a pretrained codec such as facebook/encodec_32khz."),
) -> None:
    """Convert a MusicGen checkpoint trained with audiocraft and register it (audiocraft not needed)."""
    from musicops.config import get_settings
    from musicops.models.musicgen import ModelLoadError
    from musicops.training.run import import_audiocraft_checkpoint

    settings = get_settings()
    target = name or settings.registered_model_name
    with console.status(f"converting {directory}"):
        try:
            version, conversion = import_audiocraft_checkpoint(directory, target, settings, licence or None,
                                                               text_encoder, codec)
        except (ModelLoadError, ValueError) as exc:
            fail(str(exc), 2)
    origin = conversion.origin
    console.print(f"converted audiocraft {origin['audiocraft_version']} checkpoint -> {conversion.directory}")
    for file, digest in origin["sha256"].items():
        console.print(f"  {file} sha256 {digest}")
    console.print(f"registered models:/{target}/{version}")
