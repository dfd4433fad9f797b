"""An interrupted npz run says what happened, and advises nothing that extract then refuses."""
from __future__ import annotations

from audioembed import streaming
from helpers_cli import cli


def test_an_interrupted_npz_run_does_not_advise_skip_existing(make_wav, tiny_model_dir, tmp_path,
                                                              monkeypatch):
    for i, k in enumerate("abc"):
        make_wav(f"d/{k}.wav", seconds=0.5, seed=i)
    real_update = streaming.SampleChecker.update

    def update(self, block):
        if self.name.endswith("c.wav"):
            raise KeyboardInterrupt
        real_update(self, block)

    monkeypatch.setattr(streaming.SampleChecker, "update", update)
    out = tmp_path / "all.npz"
    args = ["extract", str(tmp_path / "d"), "-o", str(out), "--model", str(tiny_model_dir), "-q",
            "--workers", "0", "--batch-size", "1"]
    res = cli(*args)
    assert res.exit_code == 130, res.output
    assert "nothing was written" in res.stderr and "--skip-existing to go on" not in res.stderr
    assert not out.exists()
    monkeypatch.undo()
    # What it advises (the same command again) works.
    assert cli(*args).exit_code == 0 and out.exists()
