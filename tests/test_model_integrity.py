"""Model folders whose weights are corrupt are refused at load, naming what is wrong."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from audioembed import save_model_folder
from audioembed.cli import main
from audioembed.model_folder import ModelFormatError, load_model_folder


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def nan_model_dir(tiny_model_dir, tmp_path):
    net = load_model_folder(tiny_model_dir)
    with torch.no_grad():
        net.layer2[0].conv2.weight[0, 0, 0, 0] = float("nan")
    return save_model_folder(net, tmp_path / "nan_model")


def test_a_nan_weight_is_refused_at_load_naming_its_tensor(nan_model_dir, make_wav, tmp_path):
    with pytest.raises(ModelFormatError, match=r"layer2\.0\.conv2\.weight.*NaN"):
        load_model_folder(nan_model_dir)
    res = cli("info", "--model", nan_model_dir)
    assert res.exit_code == 1 and "layer2.0.conv2.weight" in res.stderr
    res = cli("extract", make_wav("a.wav"), "-o", tmp_path / "a.npy", "--model", nan_model_dir)
    assert res.exit_code == 2 and "layer2.0.conv2.weight" in res.stderr
    assert "scale it down" not in res.stderr and not (tmp_path / "a.npy").exists()
