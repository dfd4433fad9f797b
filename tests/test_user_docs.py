"""User documents speak to users: no development log, and the shapes the project promises."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
USER_DOCS = sorted({ROOT / "README.md", ROOT / "MODEL_CARD.md", ROOT / "ARCHITECTURE.md",
                    ROOT / "training" / "README.md", *(ROOT / "docs").glob("*.md")})
DOC_PAGES = ["cli.md", "python-api.md", "backends.md", "frontend.md", "benchmarks.md", "reproduction.md"]

# Development history belongs in CHANGELOG.md (releases) or the tracker, not in user documents.
# Numbered references only, so that ordinary prose ("a known issue", "this session of training")
# stays allowed.
DEV_LOG = [
    (r"\bsessions?[ -]\d+", "a session number"),
    (r"\b(?:issue|ticket|tracker item)s? #?\d+", "a tracker issue number"),
    (r"\bruns? (?:number |no\. |#)\d+", "a run number"),
    (r"\bload average", "a load average"),
    (r"\bdev(?:elopment)? machine", '"the development machine"'),
    (r"\bhand timings?|\btimed by hand|\bmade by hand\b", "hand timings"),
    (r"\bthis session\b|\bwhat this session\b|\bthe session\b", "this session"),
    (r"\bSIGSTOP\b", "a paused process"),
    (r"\bthe issue'?s?\b", '"the issue" (a tracker reference)'),
]
DEV_LOG = [(re.compile(p, re.I), what) for p, what in DEV_LOG]


def _offences(text: str) -> list[str]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        for pattern, what in DEV_LOG:
            m = pattern.search(line)
            if m:
                out.append(f"line {n}: {what}: {m.group(0)!r}")
    return out


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_documents_hold_no_development_log(path):
    assert _offences(path.read_text(encoding="utf-8")) == []


def test_the_phrase_check_catches_what_it_should_and_not_ordinary_prose():
    assert _offences("measured in session 5 on the development machine")
    assert _offences("as issue 14 allows") and _offences("(load average 4)")
    assert _offences("hand timings, not kept") and _offences("what this session changed")
    assert _offences("below the issue's 0.70 bar")
    assert not _offences("a known issue with MP3 headers; training sessions resume with --resume")
    assert not _offences("4 hidden layers of 512; Table 3; 300 steps of 32 windows")


def test_docs_has_its_six_pages():
    assert sorted(p.name for p in (ROOT / "docs").glob("*.md")) == sorted(DOC_PAGES)


def test_readme_is_short_and_keeps_what_ci_and_users_run():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "pip install -c constraints.txt ." in text
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert 'pip install -c constraints.txt -e ".[dev]" && python -m pytest -q' in text  # .ci/run
    for page in DOC_PAGES:
        assert f"docs/{page}" in text, page
    for name in ("triplet-resnet50-joint", "triplet-resnet50-joint-v0.2", "triplet-resnet50-joint-v0.3",
                 "triplet-resnet50-joint-v0.4", "triplet-resnet50-joint-v0.5"):
        assert f"`{name}`" in text


def test_readme_lists_every_registered_model_with_its_sha256():
    from audioembed import registry

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for model in registry.released():
        assert re.search(rf"`{re.escape(model.name)}` \|[^\n]*`{model.sha256}`", text), model.name


def test_model_card_follows_the_hub_template():
    text = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 220
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert meta["license"] and meta["library_name"] == "audioembed" and meta["pipeline_tag"]
    assert isinstance(meta["tags"], list)
    assert isinstance(meta["datasets"], list) and all(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", d) for d in meta["datasets"])
    headings = re.findall(r"^##+ (.+)$", text, re.M)
    for section in ("Model details", "How to get started", "Uses", "Out-of-scope uses", "Training data",
                    "Training procedure", "Evaluation", "Bias, risks and limitations", "Citation"):
        assert section in headings, section
    start = text.split("## How to get started", 1)[1].split("\n## ", 1)[0]
    assert "```python" in start and "embed(" in start
    for marker in ("results", "training"):  # spliced by python -m training model-card
        assert f"<!-- {marker}:start -->" in text and f"<!-- {marker}:end -->" in text


def test_changelog_holds_every_release():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    for version in ("v0.1", "v0.2", "v0.3", "v0.4", "v0.5"):
        assert f"## {version}" in text
    assert text.count("whether it was met") >= 3


def test_cli_page_names_every_command_and_option():
    from audioembed.cli import main

    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, command in main.commands.items():
        assert f"## {name}" in page or f"[`{name}`]" in page, name
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("-") and opt not in ("-h", "--help"):
                    assert opt in page, f"{name} {opt}"
