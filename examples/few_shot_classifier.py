"""Few-shot classification: a linear classifier on embeddings of ~20 labelled clips per class.

    python examples/few_shot_classifier.py FOLDER [--model MODEL] [--shots 20] [--test 10]

Labels come from file names, ``LABEL_anything.wav`` (any audio extension); the Free Spoken Digit Dataset's
``digit_speaker_index.wav`` fits (recordings/ holds 50 clips per digit). For each class,
``--shots`` clips train the classifier and ``--test`` other clips measure its accuracy.
Two classifiers are reported: nearest class centroid (cosine) and multinomial logistic
regression (full-batch L-BFGS in torch; scikit-learn is not needed).
"""
from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from audioembed import embed
from audioembed.audio_io import audio_files


def split(folder: Path, shots: int, test: int, seed: int) -> tuple[list, list]:
    """(train, test) lists of (path, label), ``shots`` and ``test`` clips per class."""
    by_label = defaultdict(list)
    for path in audio_files(folder, recursive=False):
        by_label[path.stem.split("_")[0]].append(path)
    rng = random.Random(seed)
    train, held_out = [], []
    for label, paths in sorted(by_label.items()):
        if len(paths) < shots + test:
            sys.exit(f"class {label!r} has {len(paths)} clips; --shots {shots} --test {test} needs "
                     f"{shots + test}")
        rng.shuffle(paths)
        train += [(p, label) for p in paths[:shots]]
        held_out += [(p, label) for p in paths[shots:shots + test]]
    return train, held_out


def logistic_regression(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-2):
    """Fit on standardised features; returns a function from features to predicted classes."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt, yt = torch.from_numpy((x - mean) / std), torch.from_numpy(y)
    linear = torch.nn.Linear(x.shape[1], n_classes, dtype=xt.dtype)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(xt), yt) + l2 * linear.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)

    @torch.no_grad()
    def predict(z: np.ndarray) -> np.ndarray:
        return linear(torch.from_numpy((z - mean) / std)).argmax(1).numpy()
    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="labelled clips named LABEL_anything.wav")
    parser.add_argument("--model", default=None,
                        help="registry name, model folder or hf-hub:org/repo (default: the default model)")
    parser.add_argument("--shots", type=int, default=20, help="training clips per class")
    parser.add_argument("--test", type=int, default=10, help="held-out clips per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train, test = split(args.folder, args.shots, args.test, args.seed)
    labels = sorted({label for _, label in train})
    emb = embed([p for p, _ in train + test], model=args.model, progress=True).astype(np.float64)
    y = np.array([labels.index(label) for _, label in train + test])
    x_train, y_train = emb[:len(train)], y[:len(train)]
    x_test, y_test = emb[len(train):], y[len(train):]

    centroids = np.stack([x_train[y_train == k].mean(0) for k in range(len(labels))])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    centroid_acc = np.mean((x_test @ centroids.T).argmax(1) == y_test)
    logreg_acc = np.mean(logistic_regression(x_train, y_train, len(labels))(x_test) == y_test)

    print(f"classes: {len(labels)} ({' '.join(labels)}); {args.shots} training and {args.test} "
          f"held-out clips per class")
    print(f"chance:                       {1 / len(labels):.3f}")
    print(f"nearest centroid accuracy:    {centroid_acc:.3f}")
    print(f"logistic regression accuracy: {logreg_acc:.3f}")


if __name__ == "__main__":
    main()
