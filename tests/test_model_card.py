"""The model card generator: spliced blocks, log summaries, and the staleness check."""
from __future__ import annotations

import json

import pytest

from training.model_card import model_card, splice, summarize_log, training_markdown
from helpers_cli import cli


def _log(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(step, loss, seen, elapsed):
    return {"step": step, "loss": loss, "active": 0.5, "d_ap": 0.2, "d_an": 0.4,
            "triplets_per_s": 10.0, "lr": 1e-4, "samplers": {"translation": 32},
            "triplets_seen": seen, "elapsed_s": elapsed}


def test_splice_replaces_only_the_marked_block():
    card = "head\n<!-- results:start -->\nold\n<!-- results:end -->\ntail\n"
    assert splice(card, "results", "new") == "head\n<!-- results:start -->\nnew\n<!-- results:end -->\ntail\n"


def test_summary_totals_and_tail_means(tmp_path):
    log = tmp_path / "train_log.jsonl"
    _log(log, [_row(1, 0.1, 32, 3.0), _row(2, 0.05, 64, 6.0), _row(3, 0.03, 96, 9.6)])
    s = summarize_log(log, last=2)
    assert s["steps"] == 3 and s["triplets_seen"] == 96
    assert s["triplets_by_sampler"] == {"translation": 96}
    assert s["last_2_log_lines"]["loss"] == pytest.approx(0.04)
    assert s["mean_triplets_per_s"] == 10.0


def test_summary_keeps_dev_measurements_apart_and_stops_at_the_released_step(tmp_path):
    log = tmp_path / "train_log.jsonl"
    dev = lambda step, m: {"step": step, "triplets_seen": 32 * step,  # noqa: E731
                           "dev": {"dataset": "debian-sfx", "qbe_map": m, "windows": 9}}
    _log(log, [dev(0, 0.33), _row(1, 0.1, 32, 3.0), _row(2, 0.05, 64, 6.0), dev(2, 0.41),
               _row(3, 0.03, 96, 9.6), _row(4, 0.02, 128, 12.0), dev(4, 0.45)])
    s = summarize_log(log, last=2, up_to_step=3)
    assert s["steps"] == 3 and s["triplets_seen"] == 96
    assert s["last_2_log_lines"]["loss"] == pytest.approx(0.04)
    assert [d["qbe_map"] for d in s["dev_qbe"]] == [0.33, 0.41]
    assert "0.410 @ 64" in training_markdown({**s, "hardware": "test"})
    # Exported at step 4, whose loss line is not logged (log_every 3): the dev line at step 4
    # gives the run's end, so steps and triplets match the model's provenance.
    _log(log, [dev(0, 0.33), _row(3, 0.03, 96, 9.6), dev(4, 0.45), _row(6, 0.02, 192, 19.0)])
    s = summarize_log(log, last=2, up_to_step=4)
    assert s["steps"] == 4 and s["triplets_seen"] == 128


def test_card_is_regenerated_then_checked(tmp_path, monkeypatch):
    results = tmp_path / "r.json"
    results.write_text("{}")
    log = tmp_path / "train_log.jsonl"
    _log(log, [_row(1, 0.1, 32, 3.0)])
    card = tmp_path / "CARD.md"
    card.write_text("<!-- results:start -->\n<!-- results:end -->\n<!-- training:start -->\n"
                    "<!-- training:end -->\n")
    monkeypatch.setattr("training.model_card.load_results", lambda p: {"path": str(p)})
    monkeypatch.setattr("training.model_card.render", lambda rs: f"TABLE {len(rs)}")
    summary = tmp_path / "summary.json"
    args = ["--results", str(results), "--train-summary", str(summary), "--card", str(card)]
    r = cli(*args, "--run-log", log, "--hardware", "test CPU", command=model_card)
    assert r.exit_code == 0, r.output
    text = card.read_text()
    assert "TABLE 1" in text and "| triplets seen | 32 (by sampler, over the logged steps: translation 32) |" in text and "test CPU" in text
    assert cli(*args, "--check", command=model_card).exit_code == 0
    card.write_text(text.replace("TABLE 1", "TABLE typed by hand"))
    stale = cli(*args, "--check", command=model_card)
    assert stale.exit_code == 1 and "stale" in stale.output


def test_card_draws_the_dev_curve_when_asked(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    results = tmp_path / "r.json"
    results.write_text("{}")
    log = tmp_path / "train_log.jsonl"
    dev = lambda step, m: {"step": step, "triplets_seen": 32 * step,  # noqa: E731
                           "dev": {"dataset": "debian-sfx", "qbe_map": m, "windows": 9}}
    _log(log, [dev(0, 0.33), _row(1, 0.1, 32, 3.0), _row(2, 0.05, 64, 6.0), dev(2, 0.41)])
    card = tmp_path / "CARD.md"
    card.write_text("<!-- results:start -->\n<!-- results:end -->\n<!-- training:start -->\n"
                    "<!-- training:end -->\n")
    monkeypatch.setattr("training.model_card.load_results", lambda p: {"path": str(p)})
    monkeypatch.setattr("training.model_card.render", lambda rs: "TABLE")
    png = tmp_path / "fig" / "dev.png"
    args = ["--results", str(results), "--train-summary", str(tmp_path / "s.json"), "--card", str(card),
            "--run-log", str(log), "--figure", str(png)]
    r = cli(*args, command=model_card)
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    _log(log, [_row(1, 0.1, 32, 3.0)])
    r = cli(*args, command=model_card)
    assert r.exit_code == 1 and "no dev QbE records" in r.output
