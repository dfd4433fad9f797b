"""Few-shot classification on the embedding (the paper's light supervision, as a tool).

A :class:`Classifier` is the evaluator's shallow classifier (``audioembed.mlp``: one hidden
layer of 512 ReLU units, one sigmoid output per class) trained on the *window* embeddings of
a few labelled files, each window carrying its file's label. Some files of each class are held
out for validation, and training keeps the weights of the epoch with the lowest validation
loss. A file's score for a class is the mean of its windows' sigmoid outputs.

    >>> from audioembed import Classifier
    >>> clf = Classifier.fit(["dog1.wav", "dog2.wav", "cat1.wav", "cat2.wav"],
    ...                      ["dog", "dog", "cat", "cat"])            # doctest: +SKIP
    >>> clf.predict(["new.wav"])                                      # doctest: +SKIP
    ['dog']
    >>> clf.save("pets")                                              # doctest: +SKIP
    >>> Classifier.load("pets").scores("new.wav")                     # doctest: +SKIP
    array([0.03, 0.97])

A classifier folder holds ``classifier.safetensors`` (the network) and ``classifier.json``
(labels, the embedding model's name and sha256, the layer, the frontend, the sizes and a
training summary). No pickle. :func:`fit_command` and :func:`predict_command` are
``audioembed classify fit`` / ``predict`` as functions; ``cli.py`` only parses and prints.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors, save as save_safetensors

from audioembed import __version__, api, frontend
from audioembed.audio_io import silence_message
from audioembed.backends import default_workers
from audioembed.errors import AudioembedError, InvalidArgumentError
from audioembed.extract import (MODEL_LOAD_ERRORS, Progress, RunReport, UsageError, audio_seconds,
                                check_writable, expand_inputs, load_model_for_cli, skipped_note)
from audioembed.loading import FOLDER, cached_model, parse_model_spec
from audioembed.mlp import MLPConfig, capped_windows, mlp_network, train_mlp, window_probabilities
from audioembed.outputs import atomic_write
from audioembed.registry import DEFAULT_MODEL

FORMAT = "audioembed-classifier/1"
CONFIG_NAME = "classifier.json"
WEIGHTS_NAME = "classifier.safetensors"
# The evaluator's network (audioembed.mlp defaults) with training sized for a few labelled
# files: batches of 32 windows (the evaluator's light supervision) and a validation split
# large enough to hold out at least one file of every class with 5 or more.
FEW_SHOT = MLPConfig(hidden_layers=1, batch_size=32, epochs=200, patience=20, val_fraction=0.2)


class ClassifierError(AudioembedError, ValueError):
    """Training data, a classifier folder or a model that a classifier cannot use; one line."""


@dataclass
class Classifier:
    """A trained classifier: ``network`` on the window features of ``layer`` of the embedding
    model whose weights have sha256 ``model_sha256``; ``labels[j]`` is output ``j``.

    Build one with :meth:`fit` (or :meth:`load`), not by hand.
    """

    network: torch.nn.Sequential
    labels: list[str]
    model_name: str
    model_sha256: str
    layer: str = "embedding"
    hop: float = frontend.DEFAULT_HOP_SECONDS
    training: dict = field(default_factory=dict)
    model: Any = field(default=None, repr=False)  # the embedding network, once loaded

    # -- training ---------------------------------------------------------------------------

    @classmethod
    def fit(cls, items: Sequence, labels: Sequence[str], model=None, layer: str = "embedding", *,
            sr: int | None = None, hidden: int = 1, seed: int = 0,
            hop: float = frontend.DEFAULT_HOP_SECONDS, device: str | None = None,
            batch_size: int = api.DEFAULT_BATCH_SIZE, config: MLPConfig | None = None) -> "Classifier":
        """Embed ``items`` (paths or arrays with ``sr``, as :func:`audioembed.embed` takes) with
        ``model`` (default: the bundled default) and train on their ``labels``.

        ``hidden`` is the number of hidden layers (0: linear, which measured less accurate on
        FSDD, see ``examples/few_shot_fsdd.py``); ``config`` overrides the training settings
        (default :data:`FEW_SHOT`). Deterministic given ``seed``.

            >>> clf = Classifier.fit(paths, labels, model="triplet-resnet50-joint")  # doctest: +SKIP

        Raises:
            AudioError: an input cannot be embedded (the message names it).
            ClassifierError: fewer than 2 classes, or labels that do not match the inputs.
        """
        items, labels = list(items), [str(label) for label in labels]
        if len(items) != len(labels):
            raise ClassifierError(f"{len(items)} inputs but {len(labels)} labels")
        check_classes(labels)
        net, name, sha = embedding_model(model, device)
        results = _embedded(items, sr, _readout(net, layer), layer, hop, batch_size)
        for res in results:
            api.raise_or_warn(res)
        config = replace(config or FEW_SHOT, hidden_layers=hidden, seed=seed)
        network, summary = train(labels, [r.window_embeddings for r in results], config)
        return cls(network, sorted(set(labels)), name, sha, layer, hop, summary, net)

    # -- prediction -------------------------------------------------------------------------

    def scores(self, items, sr: int | None = None, *, batch_size: int = api.DEFAULT_BATCH_SIZE
               ) -> np.ndarray:
        """Scores ``(N, n_classes)`` float64 in ``[0, 1]``, columns in :attr:`labels` order, for
        a list of inputs; ``(n_classes,)`` for one input (a path or an array with ``sr``).

        Raises:
            AudioError: an input cannot be embedded. ClassifierError: the embedding model is
            not the one the classifier was trained on.
        """
        single = not isinstance(items, (list, tuple))
        batch = [items] if single else list(items)
        if not batch:
            raise InvalidArgumentError("scores() got an empty list of inputs")
        net = _readout(self.embedding_model(), self.layer)
        out = []
        for res in _embedded(batch, sr, net, self.layer, self.hop, batch_size):
            api.raise_or_warn(res)
            out.append(self.window_scores(res.window_embeddings))
        return out[0] if single else np.stack(out)

    def predict(self, items, sr: int | None = None) -> list[str] | str:
        """The best label of each input (a list), or of one input (a string).

            >>> Classifier.load("pets").predict(["a.wav", "b.wav"])  # doctest: +SKIP
            ['dog', 'cat']
        """
        scores = self.scores(items, sr)
        if scores.ndim == 1:
            return self.labels[int(scores.argmax())]
        return [self.labels[int(j)] for j in scores.argmax(axis=1)]

    def window_scores(self, windows: np.ndarray) -> np.ndarray:
        """One file's scores from its window features ``(n, D)`` (:func:`file_scores`)."""
        return file_scores(self.network, windows)

    def top_k(self, scores: np.ndarray, k: int = 1) -> list[tuple[str, float]]:
        """``(label, score)`` of the ``k`` best classes of one input's ``scores``, best first."""
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.labels[int(j)], float(scores[j])) for j in order]

    def embedding_model(self, model=None, device: str | None = None):
        """The embedding network (``model``, else the one recorded at training), loaded once;
        refused unless its weights' sha256 is the one the classifier was trained on."""
        if model is None and self.model is not None:
            return self.model
        net, _, sha = embedding_model(self.model_name if model is None else model, device)
        if sha != self.model_sha256:
            raise ClassifierError(
                f"the classifier was trained on the embeddings of model {self.model_name} (sha256 "
                f"{self.model_sha256[:12]}...), but the model loaded has sha256 {sha[:12]}...; "
                "pass --model / model= with the model it was trained on")
        self.model = net
        return net

    # -- files ------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``folder/classifier.safetensors`` and ``folder/classifier.json`` (the JSON last:
        its presence means the folder is whole). Returns the folder.

            >>> clf.save("pets")  # doctest: +SKIP
        """
        folder = Path(folder)
        if (folder / CONFIG_NAME).exists() and not overwrite:
            raise ClassifierError(f"{folder}: already holds a classifier; pass --overwrite to replace it")
        state = {k: v.detach().contiguous() for k, v in self.network.state_dict().items()}
        blob = save_safetensors(state)
        atomic_write(folder / WEIGHTS_NAME, lambda f: f.write(blob), fsync=True)
        text = json.dumps(self.metadata(), indent=2) + "\n"
        atomic_write(folder / CONFIG_NAME, lambda f: f.write(text.encode()), fsync=True)
        return folder

    def metadata(self) -> dict:
        """What ``classifier.json`` holds."""
        return {
            "format": FORMAT, "audioembed": __version__, "labels": self.labels,
            "model": {"name": self.model_name, "sha256": self.model_sha256},
            "layer": self.layer, "hop": self.hop, "frontend": frontend.config(),
            "input_dim": self.network[0].mean.shape[0], "n_classes": len(self.labels),
            "hidden_layers": sum(isinstance(m, torch.nn.ReLU) for m in self.network),
            "hidden_units": self.network[1].out_features if len(self.network) > 2 else 0,
            "training": self.training,
        }

    @classmethod
    def load(cls, folder: str | os.PathLike, model=None, device: str | None = None) -> "Classifier":
        """Read a folder :meth:`save` wrote. ``model`` replaces the recorded embedding model
        (it must have the same sha256; checked when it is first needed).

            >>> Classifier.load("pets").predict("new.wav")  # doctest: +SKIP
            'dog'

        Raises:
            ClassifierError: not a classifier folder, a corrupt one, or one made with another
            frontend.
        """
        folder = Path(folder)
        meta = read_metadata(folder)
        try:
            blob = (folder / WEIGHTS_NAME).read_bytes()
            state = load_safetensors(blob)
        except OSError as exc:
            raise ClassifierError(f"{folder / WEIGHTS_NAME}: cannot be read ({exc.strerror or exc})") from exc
        except SafetensorError as exc:
            raise ClassifierError(f"{folder / WEIGHTS_NAME}: not a readable safetensors file ({exc})") from exc
        network = mlp_network(meta["input_dim"], meta["n_classes"], meta["hidden_layers"],
                              meta["hidden_units"] or 1)
        try:
            network.load_state_dict(state)
        except RuntimeError as exc:  # missing, unexpected or wrongly shaped tensors
            first = str(exc).strip().splitlines()
            raise ClassifierError(f"{folder / WEIGHTS_NAME}: weights do not match {CONFIG_NAME} "
                                  f"({' '.join(line.strip() for line in first)[:300]})") from exc
        network.eval()
        clf = cls(network, list(meta["labels"]), meta["model"]["name"], meta["model"]["sha256"],
                  meta["layer"], float(meta["hop"]), meta.get("training", {}))
        if model is not None:
            clf.embedding_model(model, device)
        return clf


def read_metadata(folder: Path) -> dict:
    """``classifier.json`` of ``folder``, checked: its format, fields and frontend."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        what = "no such folder" if not folder.exists() else f"no {CONFIG_NAME}"
        raise ClassifierError(f"{folder}: not a classifier folder ({what}); make one with "
                              "audioembed classify fit DATA -o FOLDER")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClassifierError(f"{path}: cannot be read ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ClassifierError(f"{path}: format {got!r}, this audioembed reads {FORMAT!r}")
    required = {"labels": list, "model": dict, "layer": str, "hop": (int, float), "input_dim": int,
                "n_classes": int, "hidden_layers": int, "hidden_units": int}
    bad = [k for k, kind in required.items() if not isinstance(meta.get(k), kind)]
    if bad or not isinstance(meta["model"].get("sha256"), str) or len(meta["labels"]) != meta["n_classes"]:
        raise ClassifierError(f"{path}: missing or malformed fields ({', '.join(bad) or 'model, labels'})")
    if meta.get("frontend") != frontend.config():
        raise ClassifierError(f"{path}: made with a different frontend than this audioembed "
                              "computes; refit the classifier")
    return meta


# -- training ------------------------------------------------------------------------------

def check_classes(labels: Sequence[str]) -> None:
    """A classifier needs two classes or more."""
    classes = sorted(set(labels))
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise ClassifierError(f"a classifier needs files of 2 classes or more; found {found}")


def validation_split(y: np.ndarray, fraction: float, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, val)`` file indices: ``round(fraction * n)`` of each class's ``n`` files held out,
    at least one when it has 2 or more, never all of them (stratified, seeded, by file so that
    a file's windows are never on both sides)."""
    val = []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        n_val = min(max(1, round(fraction * len(members))), len(members) - 1) if fraction > 0 else 0
        val.extend(members[:n_val].tolist())
    val = np.sort(np.array(val, dtype=np.int64))
    return np.setdiff1d(np.arange(len(y)), val), val


def file_scores(network: torch.nn.Module, windows: np.ndarray) -> np.ndarray:
    """One file's scores from its window features ``(n, D)``: the mean sigmoid output per class."""
    probs = window_probabilities(network, torch.from_numpy(np.ascontiguousarray(windows, np.float32)))
    # float64: the mean of probabilities near 0 or 1 would tie in float32.
    return probs.astype(np.float64).mean(axis=0)


def _stack(windows: list[np.ndarray], files: np.ndarray, y: np.ndarray, n_classes: int,
           cap: int | None, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of ``files`` (a seeded ``cap`` of each, as the evaluator trains) and their
    one-hot targets."""
    x = np.concatenate([windows[f] for f in files])
    seg = np.repeat(np.arange(len(files)), [len(windows[f]) for f in files])
    if cap is not None:
        keep = capped_windows(seg, cap, rng)
        x, seg = x[keep], seg[keep]
    targets = np.eye(n_classes, dtype=np.float32)[y[files][seg]]
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(targets)


@contextlib.contextmanager
def _one_thread():
    """Torch on one thread while the classifier trains: its steps are too small to share out
    (on a busy 2-core machine two threads made them 2.5x slower, see training/evaluation/cli.py),
    and one thread also keeps the sums, so the weights, the same on every machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train(labels: Sequence[str], windows: list[np.ndarray], config: MLPConfig = FEW_SHOT
          ) -> tuple[torch.nn.Sequential, dict]:
    """The network and a training summary from each file's window features and label.

        >>> net, summary = train(["a", "b"] * 4, [np.random.rand(2, 8) for _ in range(8)])
        >>> summary["n_files"], summary["stopping"]
        (8, 'early stopping')
    """
    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    rng = np.random.default_rng(config.seed)
    fit, val = validation_split(y, config.val_fraction, rng)
    x_fit, t_fit = _stack(windows, fit, y, len(classes), config.max_windows, rng)
    val_data = _stack(windows, val, y, len(classes), config.max_windows, rng) if len(val) else None
    with _one_thread():
        network, log = train_mlp(x_fit, t_fit, config, val_data)
    summary = {
        "config": config.to_dict(), **log,
        "stopping": "early stopping" if val_data is not None else
                    "fixed epochs (no class has 2 files, so none can be held out for validation)",
        "n_files": len(labels), "n_fit_files": len(fit), "n_val_files": len(val),
        "n_fit_windows": len(x_fit), "files_per_class": dict(sorted(Counter(labels).items())),
    }
    if val_data is not None:
        scores = np.stack([file_scores(network, windows[f]) for f in val])
        summary["val_accuracy"] = float((scores.argmax(axis=1) == y[val]).mean())
    return network, summary


# -- embedding -----------------------------------------------------------------------------

def embedding_model(model, device: str | None = None) -> tuple[Any, str, str]:
    """``(network, name to reload it by, sha256 of its weights)`` for ``model`` (a name, folder,
    Hub name or loaded model)."""
    net = cached_model(model, device)
    sha = (getattr(net, "info", None) or {}).get("sha256")
    if sha is None:
        raise ClassifierError("the model has no recorded sha256 (it was built in memory): save it "
                              "with save_model_folder and pass the folder, so that a classifier "
                              "can check it is given the same model")
    if isinstance(model, torch.nn.Module):
        name = net.info.get("folder") or net.info.get("source") or "<model in memory>"
    else:
        spec = parse_model_spec(model)
        # A folder is recorded absolute, so predict finds it from any working directory.
        name = str(Path(spec.name).resolve()) if spec.kind == FOLDER else spec.name
    return net, name, sha


def _readout(net, layer: str):
    try:
        return api.readout_network(net, layer)
    except InvalidArgumentError as exc:
        raise ClassifierError(f"--layer: {exc}") from exc


def _embedded(items: list, sr, net, layer: str, hop: float, batch_size: int, workers: int = 0,
              bar: Progress | None = None) -> list[api.ItemResult]:
    """Every input's window features (or its error), in input order."""
    features = api.iter_features(items, sr, hop, workers)
    if bar is not None:
        features = _counted(features, bar)
    out = []
    for res in api.iter_embeddings(features, net, batch_size, layer):
        out.append(res)
        if bar is not None:
            bar.file_done()
    return out


def _counted(chunks, bar: Progress):
    for chunk in chunks:
        bar.advance(chunk.seconds)
        yield chunk


# -- the commands --------------------------------------------------------------------------

def read_training_data(data: str | os.PathLike) -> tuple[list[Path], list[str], list[str], list[str]]:
    """``(paths, labels, failures, notes)`` of DATA: a folder with one sub-folder per class
    (its audio files, at every depth) or a CSV ``path,label`` (a header row is optional;
    relative paths are relative to the CSV's folder).

    Raises:
        UsageError: DATA is neither, or names no audio.
    """
    data = Path(data)
    if data.is_dir():
        return _read_class_folders(data)
    if data.is_file() and data.suffix.lower() == ".csv":
        return _read_csv(data)
    if not data.exists():
        raise UsageError(f"{data}: no such file or folder")
    raise UsageError(f"{data}: DATA is a folder with one sub-folder per class, or a CSV path,label")


def _read_class_folders(root: Path) -> tuple[list[Path], list[str], list[str], list[str]]:
    paths, labels, failures, notes = [], [], [], []
    skipped: Counter = Counter()
    try:
        entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    except OSError as exc:
        raise UsageError(f"{root}: cannot list folder ({exc.strerror or exc})") from exc
    subfolders = sorted(p for p in entries if p.is_dir())
    loose = [p for p in entries if p.is_file()]
    if not subfolders:
        raise UsageError(f"{root}: no sub-folders; DATA is a folder with one sub-folder per class "
                         "(DATA/dog/*.wav, DATA/cat/*.wav) or a CSV path,label")
    if loose:
        notes.append(f"ignored {len(loose)} file{'s' * (len(loose) != 1)} at the top of {root}: "
                     "only its sub-folders are classes")
    for sub in subfolders:
        found, fails = expand_inputs([sub], recursive=True, skipped=skipped)
        failures.extend(fails)
        paths.extend(s.path for s in found)
        labels.extend([sub.name] * len(found))
    note = skipped_note(skipped)
    if note is not None:
        notes.append(note)
    return paths, labels, failures, notes


def _read_csv(path: Path) -> tuple[list[Path], list[str], list[str], list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: cannot be read as a CSV ({exc})") from exc
    header = bool(rows) and [c.strip().lower() for c in rows[0]] == ["path", "label"]
    paths, labels, failures = [], [], []
    for line, row in enumerate(rows[header:], 1 + header):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            failures.append(f"{path}:{line}: expected 2 fields path,label, got {row!r}")
            continue
        file = Path(row[0].strip())
        paths.append(file if file.is_absolute() else path.parent / file)
        labels.append(row[1].strip())
    if not paths and not failures:
        raise UsageError(f"{path}: no rows; expected lines path,label")
    return paths, labels, failures, []


@dataclass
class FitReport(RunReport):
    """What ``classify fit`` did: ``RunReport``'s counts, and the classifier it saved."""

    classifier: Classifier | None = None


def fit_command(data, output, *, model=None, layer: str = "embedding", hidden: int = 1,
                seed: int = 0, device: str | None = None, overwrite: bool = False,
                progress: bool = False, progress_stream=None) -> FitReport:
    """``audioembed classify fit DATA -o OUTPUT`` as a function. A file that cannot be embedded
    is left out of training and listed in ``failures`` (exit status 1); the others still train.

    Raises:
        UsageError: bad DATA, options, model or output; nothing has been written.
    """
    if (Path(output) / CONFIG_NAME).exists() and not overwrite:
        raise UsageError(f"-o {output}: already holds a classifier; pass --overwrite to replace it")
    if Path(output).exists() and not Path(output).is_dir():
        raise UsageError(f"-o {output}: exists and is not a folder")
    if hidden not in (0, 1, 2):
        raise UsageError(f"--hidden must be 0, 1 or 2, got {hidden!r}")
    check_writable(Path(output), "dir")
    paths, labels, failures, notes = read_training_data(data)
    report = FitReport(total=len(paths), failures=failures, notes=notes, destination=Path(output))
    try:
        check_classes(labels)
    except ClassifierError as exc:
        raise UsageError(f"{data}: {exc}") from exc
    net, name, sha = _model_for_cli(model, device)
    readout = _readout_for_cli(net, layer)
    bar = Progress(sum(audio_seconds(p) for p in paths), len(paths), stream=progress_stream) if progress else None
    try:
        results = _embedded(paths, None, readout, layer, frontend.DEFAULT_HOP_SECONDS,
                            api.DEFAULT_BATCH_SIZE, default_workers(device), bar)
    finally:
        if bar is not None:
            bar.close()
    kept_windows, kept_labels = [], []
    for res, label in zip(results, labels):
        problems = list(res.warnings) + ([silence_message(res.name, res.cancelled)] if res.silent else [])
        if res.error is not None:
            report.failures.append(f"{res.error} (left out of training)")
            continue
        report.warnings.extend(problems)
        kept_windows.append(res.window_embeddings)
        kept_labels.append(label)
    try:
        check_classes(kept_labels)
    except ClassifierError as exc:
        raise UsageError(f"{data}: of the files that could be embedded, {exc}") from exc
    network, summary = train(kept_labels, kept_windows, replace(FEW_SHOT, hidden_layers=hidden, seed=seed))
    summary["left_out"] = len(paths) - len(kept_labels)
    clf = Classifier(network, sorted(set(kept_labels)), name, sha, layer,
                     frontend.DEFAULT_HOP_SECONDS, summary, net)
    try:
        clf.save(output, overwrite=overwrite)
    except OSError as exc:
        raise UsageError(f"-o {output}: cannot write: {exc.strerror or exc}") from exc
    report.succeeded, report.classifier = len(kept_labels), clf
    report.outputs = [Path(output) / WEIGHTS_NAME, Path(output) / CONFIG_NAME]
    return report


@dataclass
class PredictReport(RunReport):
    """What ``classify predict`` did: per embedded input ``(path, [(label, score), ...])``."""

    predictions: list[tuple[str, list[tuple[str, float]]]] = field(default_factory=list)


def predict_command(classifier_dir, inputs: Sequence[str], *, k: int = 1, model=None,
                    recursive: bool = False, device: str | None = None, progress: bool = False,
                    progress_stream=None) -> PredictReport:
    """``audioembed classify predict CLF_DIR INPUT...`` as a function: the top ``k`` labels of
    each input (files, folders, globs as ``extract`` expands them). A bad input fails alone.

    Raises:
        UsageError: a bad classifier folder, ``k``, or a model that is not the classifier's.
    """
    if not (isinstance(k, int) and k >= 1):
        raise UsageError(f"-k must be a positive integer, got {k!r}")
    try:
        clf = Classifier.load(classifier_dir)
    except ClassifierError as exc:
        raise UsageError(str(exc)) from exc
    sources, failures = expand_inputs(inputs, recursive)
    report = PredictReport(total=len(sources), failures=failures, destination=None)
    if not sources:
        return report
    net, _, _ = _model_for_cli(clf.model_name if model is None else model, device)
    try:
        net = clf.embedding_model(net)
    except ClassifierError as exc:
        raise UsageError(str(exc)) from exc
    paths = [s.path for s in sources]
    bar = Progress(sum(audio_seconds(p) for p in paths), len(paths), stream=progress_stream) if progress else None
    try:
        results = _embedded(paths, None, _readout_for_cli(net, clf.layer), clf.layer, clf.hop,
                            api.DEFAULT_BATCH_SIZE, default_workers(device), bar)
    finally:
        if bar is not None:
            bar.close()
    for res in results:
        if res.error is not None:
            report.failures.append(str(res.error))
            continue
        report.warnings.extend(res.warnings)
        if res.silent:
            report.warnings.append(silence_message(res.name, res.cancelled))
        report.predictions.append((res.name, clf.top_k(clf.window_scores(res.window_embeddings), k)))
        report.succeeded += 1
    return report


def _model_for_cli(model, device):
    """``embedding_model`` with its errors as UsageErrors naming ``--model``."""
    load_model_for_cli(model, device)  # the one-line --model errors extract gives
    try:
        return embedding_model(model, device)
    except MODEL_LOAD_ERRORS as exc:
        raise UsageError(f"--model {model or DEFAULT_MODEL}: {exc}") from exc


def _readout_for_cli(net, layer: str):
    try:
        return _readout(net, layer)
    except ClassifierError as exc:
        raise UsageError(str(exc)) from exc
