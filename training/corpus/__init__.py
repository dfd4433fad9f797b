"""Corpus builders: fetch open audio and lay it out as the training recipes expect.

``python -m training corpus debian --out DIR`` builds the Debian corpus
(:mod:`training.corpus.debian`); :mod:`training.corpus.containers` reads the
archive formats some packages ship their audio in.
"""
