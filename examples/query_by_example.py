"""Query by example: rank the sounds in a folder by cosine similarity to a query sound.

    python examples/query_by_example.py QUERY.wav FOLDER [--model MODEL] [--top 5]

The folder is searched at every depth. Embeddings have unit length, so the cosine similarity
of two sounds is the dot product of their embeddings.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from audioembed import embed
from audioembed.audio_io import audio_files

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query", help="the example sound")
    parser.add_argument("folder", help="the sounds to search")
    parser.add_argument("--model", default=None,
                        help="registry name, model folder or hf-hub:org/repo (default: the default model)")
    parser.add_argument("--top", type=int, default=5, help="how many neighbours to print")
    args = parser.parse_args()

    files = audio_files(args.folder)
    if not files:
        sys.exit(f"no audio files under {args.folder}")
    index = embed(files, model=args.model, progress=True)  # (N, 128), row i for files[i]
    query = embed(args.query, model=args.model)  # (128,)
    scores = index @ query
    print(f"query: {args.query}  ({len(files)} sounds searched)")
    for rank, i in enumerate(np.argsort(-scores, kind="stable")[:args.top], start=1):
        print(f"{rank:3d}. {scores[i]:.4f}  {files[i]}")


if __name__ == "__main__":
    main()
