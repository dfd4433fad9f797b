"""Dataset loaders of ``python -m training evaluate`` on temporary folders of fake audio."""
import numpy as np
import pytest
import soundfile as sf

from training.evaluation import datasets as D
from training.evaluation.datasets import DatasetError, load_dataset


def _wav(path, seconds=0.3, sr=8000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(seconds * sr), 0.1, np.float32), sr)
    return path


@pytest.fixture
def fsdd_dir(tmp_path):
    root = tmp_path / "recordings"
    for digit in "019":
        for speaker in ("george", "theo"):
            for take in range(2):
                _wav(root / f"{digit}_{speaker}_{take}.wav")
    (root / "README.txt").write_text("not audio")
    return root


def test_fsdd_digit_labels_speaker_groups(fsdd_dir):
    ds = load_dataset("fsdd", fsdd_dir)
    assert len(ds) == 12 and ds.classes == ["0", "1", "9"]
    assert set(ds.groups) == {"george", "theo"} and ds.folds is None
    i = ds.paths.index(str(fsdd_dir / "9_theo_1.wav"))
    assert ds.labels[i] == ("9",) and ds.groups[i] == "theo"
    assert ds.label_matrix().sum(axis=0).tolist() == [4, 4, 4]


def test_fsdd_speaker_labels(fsdd_dir):
    ds = load_dataset("fsdd-speaker", fsdd_dir)
    assert ds.name == "fsdd-speaker" and ds.classes == ["george", "theo"] and ds.groups is None


def test_fsdd_root_from_environment(fsdd_dir, monkeypatch):
    monkeypatch.setenv(D.FSDD_ENV, str(fsdd_dir))
    assert len(load_dataset("fsdd")) == 12


def test_fsdd_missing_says_where_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match="git clone https://github.com/Jakobovski/free-spoken-digit-dataset"):
        load_dataset("fsdd", tmp_path / "nowhere")


def test_manifest_multilabels_folds_groups(tmp_path):
    for name in ("a.wav", "sub/b.wav", "c.wav"):
        _wav(tmp_path / "audio" / name)
    manifest = tmp_path / "set.csv"
    manifest.write_text("path,labels,fold,group\n"
                        "audio/a.wav,dog;bark,1,x\n"
                        "audio/sub/b.wav, cat ,2,y\n"
                        "audio/c.wav,dog;cat;dog,2,x\n")
    ds = load_dataset(str(manifest))
    assert ds.name == "set" and ds.multi_label
    assert ds.labels == [("dog", "bark"), ("cat",), ("dog", "cat")]
    assert ds.classes == ["bark", "cat", "dog"]
    assert ds.folds == ["1", "2", "2"] and ds.groups == ["x", "y", "x"]
    np.testing.assert_array_equal(ds.label_matrix(), [[1, 0, 1], [0, 1, 0], [0, 1, 1]])
    assert ds.subset(np.array([False, True, True])).paths == ds.paths[1:]


def test_manifest_with_data_root_and_without_optional_columns(tmp_path):
    _wav(tmp_path / "clips" / "a.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.wav,x\n")
    ds = load_dataset(str(manifest), tmp_path / "clips")
    assert ds.paths == [str(tmp_path / "clips" / "a.wav")] and ds.folds is None and ds.groups is None


@pytest.mark.parametrize("text, message", [
    ("file,labels\na.wav,x\n", "path,labels"),
    ("path,labels\na.wav,\n", "without labels"),
    ("path,labels\nmissing.wav,x\n", "missing"),
    ("path,labels,fold\na.wav,x,\n", "'fold' is empty"),
])
def test_manifest_errors(tmp_path, text, message):
    _wav(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(tmp_path / "m.csv"))


def test_debian_sfx_missing_corpus_says_how_to_build_it(tmp_path):
    with pytest.raises(DatasetError, match="python -m training corpus debian"):
        load_dataset("debian-sfx", tmp_path / "no-corpus")


def test_debian_sfx_groups_by_package_and_skips_unbuilt_clips(tmp_path, monkeypatch):
    labels = tmp_path / "labeled.csv"
    labels.write_text("package,path,label,duration_s\n"
                      "pkg-a,usr/share/a.wav,bird,1.0\n"
                      "pkg-a,usr/share/b.wav,bird,1.0\n"
                      "pkg-b,_unpacked/x.zip/c.wav,door,1.0\n")
    monkeypatch.setattr(D, "DEBIAN_LABELS", labels)
    corpus = tmp_path / "corpus"
    _wav(corpus / "pkg-a" / "usr/share/a.wav")
    _wav(corpus / "pkg-b" / "_unpacked/x.zip/c.wav")
    ds = load_dataset("debian-sfx", corpus)
    assert ds.labels == [("bird",), ("door",)] and ds.groups == ["pkg-a", "pkg-b"]
    assert ds.skipped == [str(corpus / "pkg-a" / "usr/share/b.wav")]


def test_esc50_layout_uses_official_folds(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n"
        "1-100-A-0.wav,1,0,dog,True,100,A\n"
        "2-200-A-1.wav,2,1,rooster,False,200,A\n")
    for name in ("1-100-A-0.wav", "2-200-A-1.wav"):
        _wav(tmp_path / "audio" / name)
    ds = load_dataset(str(tmp_path))
    assert ds.folds == ["1", "2"] and ds.classes == ["dog", "rooster"]
    with pytest.raises(DatasetError, match="ESC-50"):
        load_dataset("esc50", tmp_path / "empty")


def test_audioset_segments_csv(tmp_path):
    csv_path = tmp_path / "eval_segments.csv"
    csv_path.write_text("# Segments csv created Sun Mar  5 10:54:25 2017\n"
                        "# num_ypos=3, num_videos=3, num_segs=3\n"
                        "# YTID, start_seconds, end_seconds, positive_labels\n"
                        '--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_"\n'
                        "--BfvyPmVMo, 20.000, 30.000, \"/m/03l9g\"\n"
                        "--gone00000, 30.000, 40.000, \"/m/03l9g\"\n")
    (tmp_path / "class_labels_indices.csv").write_text(
        "index,mid,display_name\n0,/m/068hy,Domestic animals\n1,/m/07q6cd_,Squeak\n2,/m/03l9g,Hammer\n")
    _wav(tmp_path / "audio" / "--4gqARaEJE_0.wav")
    _wav(tmp_path / "audio" / "--BfvyPmVMo_20.000.flac")
    ds = load_dataset(str(csv_path))
    assert ds.labels == [("Domestic animals", "Squeak"), ("Hammer",)]
    assert ds.skipped == ["--gone00000_30.000"]
    with pytest.raises(DatasetError, match="none of its 3 segments"):
        load_dataset(str(csv_path), tmp_path / "empty-dir")


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("no-such-thing")


def test_fingerprint_changes_with_the_files(fsdd_dir):
    before = load_dataset("fsdd", fsdd_dir).fingerprint()
    _wav(fsdd_dir / "0_george_0.wav", seconds=0.5)
    assert load_dataset("fsdd", fsdd_dir).fingerprint() != before
