"""The ``audioembed`` command: ``extract``, ``merge``, ``info``, ``export-onnx``, ``index``,
``search`` and ``classify`` (``fit``, ``predict``) (docs/cli.md). A thin click layer over
``extract.run`` (``extract`` and ``index``), ``shards`` (``merge``), ``loading`` (``info``),
``onnx_backend`` and ``quantize`` (``export-onnx``), ``search`` and ``classify``. Options that
several commands take are defined once (``*_OPTION``).

Only click is imported up front: torch takes seconds and hundreds of MB to import, which
``--help`` and ``--version`` do not need. Each command imports what it uses.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click

from audioembed import __version__
from audioembed.errors import AudioembedError, MissingDependencyError

# The defaults of the options, here as literals so that --help need not import torch;
# tests/test_cli_extract.py checks them against frontend, api and extract.
FORMATS = ("npy", "npz")
BACKENDS = ("torch", "onnx", "onnx-int8")
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_HOP_SECONDS = 0.96
DEFAULT_BATCH_SIZE = 64

# Exit statuses of an interrupted run: 128 + the signal, as shells report it.
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143

MODEL_HELP = ("Registry name, model folder (config.json + model.safetensors) or "
              "hf-hub:org/repo[@revision] (a Hub branch, tag or commit goes after @). "
              "Default: the registry's default model.")

# Options that several commands take, defined once: each decorator makes a new click.Option
# for the command it is applied to.
BATCH_SIZE_OPTION = click.option(
    "--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
    help="Windows per forward pass (at most 256, to bound memory); windows of many files share "
         "batches.")
DEVICE_OPTION = click.option("--device", default=None,
                             help="torch device, e.g. cpu, cuda, cuda:1. Default: cpu.")
WORKERS_OPTION = click.option(
    "--workers", type=click.IntRange(min=0), default=None,
    help="Threads that decode and analyse files while the network runs (0: none). Default: 1, "
         "or 0 for a torch network on the CPU of a machine with <= 2 cores. Outputs do not "
         "depend on it.")
BACKEND_OPTION = click.option(
    "--backend", type=click.Choice(BACKENDS), default=None,
    help="Run the network with torch, or with onnxruntime (CPU; pip install 'audioembed[onnx]'; "
         "faster on the CPUs we measured, see docs/benchmarks.md); onnx-int8 runs it quantized. "
         "--model may then also be an .onnx file from export-onnx (onnx-int8: one exported with "
         "--int8). Default: onnx for an .onnx --model, torch otherwise.")
LAYER_OPTION = click.option(
    "--layer", type=click.Choice(("embedding", "pooled")), default="embedding", show_default=True,
    help="embedding: the 128-d unit-norm output. pooled: the 2048-d pooled features per window, "
         "and their mean and max (4096-d, not normalised) per input (every backend; an .onnx "
         "--model must have been exported with --pooled).")


class _Commands(click.Group):
    """The command group; Ctrl-C before a command handles it itself (while torch is still
    being imported, say) exits 130 as it does later, not with click's "Aborted!" and 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted (Ctrl-C)", err=True)
            ctx.exit(EXIT_SIGINT)


@click.group(cls=_Commands,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="audioembed")
def main() -> None:
    """Unsupervised semantic audio embeddings (Jansen et al., ICASSP 2018): 128-d, unit norm."""
    # Before torch allocates anything; ctypes alone, so --help stays fast (audioembed.allocator).
    from audioembed.allocator import keep_freed_memory

    keep_freed_memory()


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", required=True, type=click.Path(path_type=str),
              help="X.npy (one input), a folder (one .npy per input) or X.npz (one archive).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format. Default: npz if -o ends in .npz, otherwise npy.")
@click.option("--windows", is_flag=True,
              help="Also write per-window embeddings and their timestamps (layout above).")
@click.option("--hop", type=float, default=DEFAULT_HOP_SECONDS, show_default=True,
              help="Seconds between window starts (0.96 = no overlap).")
@BATCH_SIZE_OPTION
@DEVICE_OPTION
@click.option("--model", default=None, help=MODEL_HELP)
@click.option("-r", "--recursive", is_flag=True, help="Search folders at every depth, not only their top level.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: fail for that input).")
@click.option("--skip-existing", is_flag=True,
              help="Skip inputs whose outputs are already there and complete: resumes an "
                   "interrupted folder job (npy outputs).")
@click.option("--strict", is_flag=True,
              help="Fail an input, instead of warning, when its file is truncated (less audio than "
                   "its header declares) or its audio is all zeros.")
@WORKERS_OPTION
@BACKEND_OPTION
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="How the torch network computes. auto: bf16 on a CUDA GPU with bf16, fp32 "
                   "elsewhere. bf16: autocast of the network (the frontend stays fp32; cosine "
                   ">= 0.999 to fp32), on CUDA or a CPU with AVX512-BF16 or AMX; refused with "
                   "the onnx backends and elsewhere.")
@click.option("--shard", default=None, metavar="K/N",
              help="Embed only inputs i with i % N == K (job arrays). Under torchrun, RANK/WORLD_SIZE "
                   "give the shard.")
@LAYER_OPTION
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary; failures are still listed.")
def extract(inputs, output, fmt, windows, hop, batch_size, device, model, recursive, overwrite,
            skip_existing, strict, workers, backend, precision, shard, layer, quiet):
    """Embed audio files: one 128-d unit-norm float32 vector per file (mean of its windows).

    \b
    INPUT is a file, a folder or a glob (quote it to let audioembed expand it; ** descends).
    Folders and globs give their files with an audio extension (wav, flac, ogg, oga, opus,
    mp3, aiff, aif, au, caf, w64, ...), sorted by name; hidden files are skipped. Links
    to folders are followed, each real folder once (link loops end; a note names the links
    not entered again). A file named explicitly is tried whatever its extension. Any sample
    rate and channel count: channels are averaged, audio is resampled to 16 kHz.

    \b
    Outputs (written atomically: never a partial file):
      -o emb.npy          one input -> (128,) segment embedding
      -o DIR              one DIR/<name>.npy per input, mirroring its path below the
                          folder or glob it was found under (recordings/a/b.wav -> DIR/a/b.npy)
      -o all.npz          names (N,) input paths, embeddings (N, 128)
    With --windows:
      npy                 also <name>.windows.npy (n, 128) and <name>.timestamps.npy (n,)
                          beside each <name>.npy
      npz                 also window_embeddings (W, 128), timestamps (W,) and offsets (N+1,):
                          input i's windows are rows offsets[i]:offsets[i+1]
    Timestamps are window centres in seconds.

    \b
    A bad input (unreadable, empty, corrupt, NaN or huge samples, a FIFO, existing output
    without --overwrite) fails alone: the others are still written and the failures are
    listed at the end on stderr. All-zero audio, and a truncated file (embedded from what
    it holds), are embedded with a warning; --strict makes them failures.
    Exit status: 0 all inputs embedded, 1 some input failed, 2 usage error (bad option,
    impossible or unwritable output, model cannot be loaded), 130 interrupted (Ctrl-C),
    143 terminated (SIGTERM). An interrupted run finishes or drops the file it is writing;
    with npy outputs rerun with --skip-existing to go on where it stopped (an npz archive
    is written whole at the end, so an interrupted npz run writes nothing).

    \b
    Many processes or machines: each takes shard K of N of the sorted input list
    (--shard K/N, or RANK/WORLD_SIZE under torchrun; --device cuda picks cuda:LOCAL_RANK).
    npy outputs are written as usual; npz gives OUT.shard-K-of-N.npz per shard, which
    `audioembed merge` joins in the order of the whole list.

    \b
    Examples:
      audioembed extract clip.wav -o emb.npy
      audioembed extract recordings/ --recursive -o out/
      audioembed extract recordings/ --recursive -o out/ --skip-existing   # resume
      audioembed extract "data/*.wav" --windows -o all.npz
      audioembed extract data/ --shard $SLURM_ARRAY_TASK_ID/8 -o all.npz
      torchrun --nnodes 2 --nproc_per_node 4 ... -m audioembed.cli extract data/ -o all.npz
    """
    from audioembed import extract as extract_mod, shards

    try:
        part = shards.resolve_shard(shard)
    except shards.ShardError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from exc
    previous = _handle_sigterm(_raise_interrupted)
    try:
        report = extract_mod.run(
            inputs, output, model=model, hop=hop, batch_size=batch_size,
            device=shards.rank_device(device), fmt=fmt, windows=windows, recursive=recursive,
            overwrite=overwrite, progress=not quiet, shard=part, workers=workers,
            backend=backend, strict=strict, skip_existing=skip_existing, layer=layer,
            precision=precision)
    except AudioembedError as exc:  # an impossible output or option, a model that cannot load
        raise click.UsageError(printable(str(exc))) from exc
    except KeyboardInterrupt as exc:
        _report_interrupt(exc)
        sys.exit(EXIT_SIGTERM if isinstance(exc, extract_mod.Interrupted) else EXIT_SIGINT)
    finally:
        _handle_sigterm(previous)
    _echo_report(report, quiet)
    sys.exit(report.exit_code)


# Control characters a file name may hold, escaped so that a message naming it stays on one
# line (a newline in a name would split a failure in two) and cannot move the cursor.
_CONTROL_ESCAPES = {**{c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, 0x85)},
                    0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def printable(line: str) -> str:
    """``line`` with the bytes of non-UTF-8 file names (surrogate escapes) shown as ``\\xNN``,
    so that printing it cannot fail, and control characters escaped (``\\n``, ``\\t``,
    ``\\x1b``), so that it is one line."""
    text = line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text.translate(_CONTROL_ESCAPES)


def _handle_sigterm(handler):
    """Install ``handler`` for SIGTERM and return the previous one; None where a handler
    cannot be set (not the main thread)."""
    if handler is None:
        return None
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


def _raise_interrupted(signum, frame):
    from audioembed.extract import Interrupted

    raise Interrupted()


def _report_interrupt(exc: KeyboardInterrupt) -> None:
    from audioembed.extract import Interrupted

    what = "terminated (SIGTERM)" if isinstance(exc, Interrupted) else "interrupted (Ctrl-C)"
    report = getattr(exc, "report", None)
    if report is None:
        click.echo(f"{what} before any input was embedded", err=True)
        return
    if report.resumable:
        click.echo(f"{what}: {report.succeeded} of {report.total} inputs written; rerun with "
                   "--skip-existing to go on", err=True)
    else:
        click.echo(f"{what}: nothing was written: {printable(str(report.destination))} is written "
                   "whole at the end; run the command again (to resume a long job, write .npy "
                   "files with -o FOLDER and rerun with --skip-existing)", err=True)
    for line in report.failures:
        click.echo(f"  {printable(line)}", err=True)


def _echo_problems(report, quiet: bool, done: str = "embedded") -> None:
    """A report's notes (unless ``quiet``), warnings and failures, on stderr; ``done`` says
    what happened to the inputs that did not fail."""
    if not quiet:
        for line in report.notes:
            click.echo(f"note: {printable(line)}", err=True)
    for line in report.warnings:
        click.echo(f"warning: {printable(line)}", err=True)
    if report.failures:
        counts = (f"{report.succeeded} of {report.total} inputs {done}" if report.total
                  else "no audio inputs found")
        click.echo(f"{report.failed} failed ({counts}):", err=True)
        for line in report.failures:
            click.echo(f"  {printable(line)}", err=True)


def _echo_report(report, quiet: bool) -> None:
    _echo_problems(report, quiet)
    if not report.failures and not quiet:
        skipped = f", {report.skipped} skipped" if report.skipped else ""
        click.echo(f"embedded {report.succeeded} file{'s' * (report.succeeded != 1)}{skipped} -> "
                   f"{printable(str(report.destination))}", err=True)


@main.command()
@click.argument("shard_files", nargs=-1, required=True, metavar="SHARD...")
@click.option("-o", "--output", required=True, type=click.Path(path_type=str),
              help="The merged archive, e.g. all.npz.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def merge(shard_files, output, overwrite):
    """Join the OUT.shard-K-of-N.npz archives of a sharded `extract` into one archive.

    \b
    Inputs come out in the order of the whole run, with the keys an unsharded run writes.
    Every shard 0..N-1 must be given, once.
    Exit status: 0 merged; 1 a shard is missing, unreadable or from another run (the input
    list, model, backend, layer or hop differ); 2 the output cannot be written.

    \b
    Example:
      audioembed merge all.shard-*-of-8.npz -o all.npz
    """
    from audioembed import shards

    try:
        n_inputs, n_shards = shards.merge_files(shard_files, output, overwrite=overwrite)
    except shards.MergeError as exc:
        click.echo(f"error: {printable(str(exc))}", err=True)
        sys.exit(1)
    except AudioembedError as exc:  # an output that cannot be written
        raise click.UsageError(printable(str(exc))) from exc
    click.echo(f"merged {n_inputs} inputs from {n_shards} shards -> {output}", err=True)


@main.command("export-onnx")
@click.argument("output", type=click.Path(path_type=str), metavar="OUT.onnx")
@click.option("--model", default=None, help=MODEL_HELP)
@click.option("--int8", is_flag=True, help="Statically quantize to int8 (QDQ, per-channel weights).")
@click.option("--calibrate", type=click.Path(exists=True, file_okay=False), default=None,
              help="With --int8: calibrate on the audio files under this folder (default: a fixed "
                   "synthetic set made by audioembed.quantize).")
@click.option("--pooled", is_flag=True, help="A second output, pooled (batch, 2048): the features "
                                            "before the embedding layer (--layer pooled).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def export_onnx(output, model, int8, calibrate, pooled, overwrite):
    """Export the network to ONNX: log_mel (batch, 96, 64) in, embedding (batch, 128) out.

    \b
    The batch dimension is dynamic; the frontend is not in the graph (embed(...,
    backend="onnx", model="OUT.onnx") runs it in Python). Needs the optional packages:
    pip install 'audioembed[onnx]'. When onnxruntime is installed the export is checked
    against torch on random windows and the largest difference printed.
    With --int8 the graph is quantized (run it with --backend onnx-int8) and its agreement
    with fp32 is printed: mean and min cosine on windows not used for calibration.
    Exit status: 0 exported; 1 the ONNX packages are missing; 2 usage error (bad model).
    """
    from audioembed import extract as extract_mod, onnx_backend, quantize
    from audioembed.outputs import check_writable

    if os.path.exists(output) and not overwrite:
        raise click.UsageError(f"{output}: exists; pass --overwrite to replace it")
    if calibrate and not int8:
        raise click.UsageError("--calibrate applies to --int8 exports")
    if os.path.isdir(output):
        raise click.UsageError(f"{output}: is a folder; name the .onnx file to write")
    try:
        # Checked before the export, which takes seconds.
        check_writable(Path(output), "single")
    except AudioembedError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        net = extract_mod.load_model_for_cli(model, None)
    except AudioembedError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        if int8:
            agree = quantize.export_int8(net, output, calibrate, pooled=pooled)
            check = (f"int8; cosine to fp32 on {agree['windows']} held-out windows: mean "
                     f"{agree['mean_cosine']:.4f}, min {agree['min_cosine']:.4f}")
        else:
            diff = onnx_backend.export_and_check(net, output, pooled=pooled)
            check = ("not checked (onnxruntime is not installed)" if diff is None
                     else f"max |onnxruntime - torch| = {diff:.2e}")
    except MissingDependencyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except AudioembedError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"exported {output}; {check}", err=True)


@main.command("index")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="INDEX.npz",
              help="The index: names (N,) and embeddings (N, D), as extract -o X.npz writes.")
@click.option("--model", default=None, help=MODEL_HELP)
@BACKEND_OPTION
@DEVICE_OPTION
@BATCH_SIZE_OPTION
@WORKERS_OPTION
@LAYER_OPTION
@click.option("--overwrite", is_flag=True, help="Replace an existing index.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary; failures are still listed.")
def index(inputs, output, model, backend, device, batch_size, workers, layer, overwrite, quiet):
    """Embed audio files (folders searched recursively) into a search index (an npz archive).

    \b
    The same file as `audioembed extract INPUTS -o INDEX.npz --recursive` with the same
    options; an npz that extract wrote is an index too. Search it with
    `audioembed search QUERY INDEX.npz` (with the index's --model and --layer).
    """
    ctx = click.get_current_context()
    if not output.endswith(".npz"):
        raise click.UsageError(f"-o {output}: an index is an .npz archive")
    ctx.invoke(extract, inputs=inputs, output=output, fmt="npz", model=model, backend=backend,
               device=device, batch_size=batch_size, workers=workers, layer=layer,
               recursive=True, overwrite=overwrite, quiet=quiet)


@main.command("search")
@click.argument("query")
@click.argument("index_path", metavar="INDEX.npz", type=click.Path(exists=True, dir_okay=False))
@click.option("-k", type=click.IntRange(min=1), default=10, show_default=True, help="Results to show.")
@click.option("--model", default=None, help=MODEL_HELP + " Must be the model that made the index.")
@BACKEND_OPTION
@LAYER_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout instead of lines.")
@click.option("--strict", is_flag=True,
              help="Fail (exit 2), instead of warning, when the query's range starts after its "
                   "audio ends, or its file is truncated or all zeros.")
def search(query, index_path, k, model, backend, layer, as_json, strict):
    """Rank the segments of INDEX.npz by cosine similarity to QUERY.

    \b
    QUERY is an audio file, or a time range of one: clip.wav@12.5-14.0 averages the windows
    centred in that range (the nearest window if none is; a range that starts after the
    audio ends warns, or with --strict fails). Prints rank, score and name, best first.
    --model and --layer must be those that made the index.
    """
    import warnings

    from audioembed import search as search_mod
    from audioembed.audio_io import SilentAudioWarning, TruncatedAudioWarning

    try:
        idx = search_mod.Index.load(index_path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            q = search_mod.query_embedding(query, model=model, backend=backend, strict=strict,
                                           layer=layer)
        for w in caught:
            if not issubclass(w.category, (SilentAudioWarning, TruncatedAudioWarning,
                                           search_mod.QueryRangeWarning)):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            elif strict:
                raise click.UsageError(f"{printable(str(w.message))} (--strict)")
            else:
                click.echo(f"warning: {printable(str(w.message))}", err=True)
        if q.shape[-1] != idx.embeddings.shape[1]:
            raise click.UsageError(f"the query embedding has {q.shape[-1]} dimensions, the index "
                                   f"{idx.embeddings.shape[1]}: embed both with the same --model "
                                   "and --layer")
        results = search_mod.search(idx, q, k)
    except AudioembedError as exc:
        raise click.UsageError(printable(str(exc))) from exc
    if as_json:
        click.echo(json.dumps({"query": query, "index": index_path, "results": results.to_dicts()}))
        return
    for hit in results:
        click.echo(f"{hit.rank:>4}  {hit.score:.4f}  {printable(hit.name)}")


@main.group()
def classify() -> None:
    """Few-shot classification: train a small classifier on the embeddings of a few labelled
    files (`fit`), then label new files (`predict`)."""


@classify.command("fit")
@click.argument("data", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(path_type=str), metavar="CLF_DIR",
              help="Folder to write the classifier to (classifier.safetensors + classifier.json).")
@click.option("--model", default=None, help=MODEL_HELP)
@click.option("--layer", type=click.Choice(("embedding", "pooled")), default="embedding", show_default=True,
              help="Train on the 128-d embedding of each window, or on the 2048-d pooled features.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the validation split and training.")
@click.option("--device", default=None, help="torch device for the embedding model. Default: cpu.")
@click.option("--overwrite", is_flag=True, help="Replace a classifier already in CLF_DIR.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary; failures are still listed.")
def classify_fit(data, output, model, layer, seed, device, overwrite, quiet):
    """Train a classifier on labelled audio: DATA is a folder with one sub-folder per class
    (DATA/dog/*.wav, DATA/cat/*.wav; any depth) or a CSV of path,label rows.

    \b
    Each file is embedded with --model; the evaluator's shallow classifier (one hidden layer
    of 512 units, one sigmoid output per class) trains on its windows. About 20% of each
    class's files are held out for validation, and the weights of the epoch with the lowest
    validation loss are kept. Deterministic given --seed.
    A file that cannot be read is left out of training and listed at the end.
    Exit status: 0 trained on every file; 1 trained, but some file failed; 2 usage error.

    \b
    Example:
      audioembed classify fit labelled/ -o my_classifier
      audioembed classify predict my_classifier new/*.wav
    """
    from audioembed import classify as classify_mod

    try:
        report = classify_mod.fit_command(data, output, model=model, layer=layer, seed=seed,
                                          device=device, overwrite=overwrite,
                                          progress=not quiet)
    except AudioembedError as exc:
        raise click.UsageError(printable(str(exc))) from exc
    _echo_problems(report, quiet)
    if not quiet:
        s = report.classifier.training
        val = (f", validation accuracy {s['val_accuracy']:.3f} on {s['n_val_files']} files"
               if "val_accuracy" in s else "")
        click.echo(f"trained on {s['n_fit_files']} files of {len(report.classifier.labels)} classes "
                   f"({s['stopping']}, best epoch {s['best_epoch']} of {s['epochs_run']}{val}) -> "
                   f"{printable(output)}", err=True)
    sys.exit(report.exit_code)


@classify.command("predict")
@click.argument("classifier_dir", metavar="CLF_DIR", type=click.Path(path_type=str))
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Print the k best labels of each input, best first.")
@click.option("--json", "as_json", is_flag=True,
              help='Print a JSON list of {"path", "label", "score"} (with -k > 1, label and score are lists).')
@click.option("--model", default=None,
              help=MODEL_HELP.replace("Default: the registry's default model.",
                                      "Default: the model the classifier was trained on; "
                                      "another is refused unless its weights are the same."))
@click.option("-r", "--recursive", is_flag=True, help="Search folders at every depth, not only their top level.")
@click.option("--device", default=None, help="torch device for the embedding model. Default: cpu.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar; failures are still listed.")
def classify_predict(classifier_dir, inputs, k, as_json, model, recursive, device, quiet):
    """Label audio files with a classifier from `classify fit`.

    \b
    INPUT is a file, a folder or a glob, as for extract. Prints one line per input on
    stdout: PATH<TAB>LABEL<TAB>SCORE, and with -k K the K best LABEL<TAB>SCORE pairs. A
    score is the class's sigmoid output averaged over the file's windows (0-1; the scores
    of one file need not sum to 1).
    A bad input fails alone, as in extract: the others are still labelled, and the failures
    are listed at the end on stderr.
    Exit status: 0 all inputs labelled, 1 some input failed, 2 usage error (bad classifier
    folder, or a model other than the classifier's).

    \b
    Examples:
      audioembed classify predict my_classifier clip.wav
      audioembed classify predict my_classifier "new/**/*.wav" -k 3 --json
    """
    from audioembed import classify as classify_mod

    try:
        report = classify_mod.predict_command(classifier_dir, inputs, k=k, model=model,
                                              recursive=recursive, device=device,
                                              progress=not quiet and not as_json)
    except AudioembedError as exc:
        raise click.UsageError(printable(str(exc))) from exc
    if as_json:
        rows = [{"path": printable(path),
                 "label": top[0][0] if k == 1 else [label for label, _ in top],
                 "score": top[0][1] if k == 1 else [score for _, score in top]}
                for path, top in report.predictions]
        click.echo(json.dumps(rows, indent=None))
    else:
        for path, top in report.predictions:
            pairs = "\t".join(f"{printable(label)}\t{score:.4f}" for label, score in top)
            click.echo(f"{printable(path)}\t{pairs}")
    _echo_problems(report, quiet=True, done="labelled")
    sys.exit(report.exit_code)


def model_info(model: str | None) -> tuple[dict, str | None]:
    """What ``info`` prints, and why the model could not be loaded (None when it loaded).

    Raises:
        extract.UsageError: ``model`` names no registered model, folder or Hub repository.
    """
    from audioembed import extract as extract_mod, frontend, registry
    from audioembed.loading import ONNX, load_model, parse_model_spec
    from audioembed.model_folder import ModelFormatError, release_provenance

    name = model or registry.DEFAULT_MODEL
    try:
        spec = parse_model_spec(name)
    except ModelFormatError as exc:
        raise extract_mod.UsageError(f"--model {exc}") from exc
    if spec.kind == ONNX:
        raise extract_mod.UsageError(f"--model {name!r}: an ONNX file; info describes registered "
                                     "models, model folders and hf-hub:org/repo[@revision]")
    info: dict = {"model": name}
    entry = spec.entry
    if entry is not None:
        info["registry"] = {"source": entry.source, "sha256": entry.sha256, "license": entry.license,
                            "paper": entry.paper, "description": entry.description}
    problem = None
    try:
        net = load_model(name)
    # Reported, not raised: info still prints what it knows about a model it cannot load.
    except extract_mod.MODEL_LOAD_ERRORS as exc:
        problem = f"{type(exc).__name__}: {exc}"
        info["weights"] = "missing or unloadable"
        info["error"] = str(exc)
    else:
        info.update({
            "weights": "loaded",
            "source": net.info.get("source"),
            "folder": net.info.get("folder"),
            "sha256": net.info.get("sha256"),
            "parameters": sum(p.numel() for p in net.parameters()),
            "config": net.info["config"].get("model"),
            # Sanitised as a release records it, for folders saved before save_model_folder did.
            "provenance": release_provenance(net.info["config"].get("provenance")),
        })
    info["frontend"] = frontend.config()
    info["registered_models"] = registry.list_models()
    return info, problem


@main.command()
@click.option("--model", default=None, help=MODEL_HELP)
def info(model):
    """Print a model's source, sha256, config and the frontend constants, as JSON.

    \b
    Exit status: 0 the model loaded; 1 it is known (registered, a folder, a Hub name) but
    its weights are missing or cannot be loaded (everything else is still printed, and the
    reason goes to stderr); 2 --model names nothing known.
    """
    try:
        payload, problem = model_info(model)
    except AudioembedError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(json.dumps(payload, indent=2, default=str))
    if problem is not None:
        click.echo(f"error: the model's weights cannot be loaded: {problem}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main(prog_name="audioembed")
