"""The package's structure: one-way imports, and lazy imports only where they are meant."""
from __future__ import annotations

import ast
from pathlib import Path

import audioembed

PACKAGE = Path(audioembed.__file__).parent
# The command line defers every import past click, so that --help does not import torch.
DEFERRING_MODULES = {"cli"}


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(encoding="utf-8"), str(p))
            for p in sorted(PACKAGE.glob("*.py"))}


def _imported(node: ast.AST, modules) -> list[str]:
    """The audioembed modules an import statement names."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
        return []
    out = []
    for name in names:
        parts = name.split(".")
        if parts[0] == "audioembed" and len(parts) == 2 and parts[1] in modules:
            out.append(parts[1])
    return out


def _graph(lazy: bool) -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, tree in modules.items():
        nodes = ast.walk(tree) if lazy else tree.body
        graph[name] = {m for node in nodes for m in _imported(node, modules)} - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_audioembed_has_no_import_cycle():
    # Imports inside functions count too: a cycle hidden by a lazy import is still a cycle.
    cycle = _cycle(_graph(lazy=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_modules_import_each_other_at_the_top_except_the_cli():
    top, every = _graph(lazy=False), _graph(lazy=True)
    lazy = {name: sorted(every[name] - top[name]) for name in every
            if every[name] - top[name] and name not in DEFERRING_MODULES}
    assert lazy == {}, f"imports of audioembed modules inside functions: {lazy}"


# --- ARCHITECTURE.md's import lists, generated from the code ----------------------------------

ROOT = PACKAGE.parent
ARCHITECTURE = ROOT / "ARCHITECTURE.md"


def _package_modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (``__init__`` and
    ``__main__`` excluded: they only re-export or start the CLI)."""
    base = ROOT / package
    out = {}
    for path in sorted(base.rglob("*.py")):
        if path.stem in ("__init__", "__main__"):
            continue
        out[".".join((package, *path.relative_to(base).with_suffix("").parts))] = path
    return out


def _imports_of(path: Path, names: set[str]) -> set[str]:
    """The modules in ``names`` that the file imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c in names}
    return found


def import_lines(package: str) -> list[str]:
    """``module → what it imports of the same package``, one line per module that imports any."""
    modules = _package_modules(package)
    short = lambda name: name[len(package) + 1:]  # noqa: E731
    lines = []
    for name, path in modules.items():
        deps = sorted(short(d) for d in _imports_of(path, set(modules)) - {name})
        if deps:
            lines.append(f"{short(name)} → {', '.join(deps)}")
    return lines


def _block(package: str) -> list[str]:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    start, end = f"<!-- imports:{package}:start -->", f"<!-- imports:{package}:end -->"
    assert start in text and end in text, f"ARCHITECTURE.md has no {start} ... {end} block"
    body = text.split(start, 1)[1].split(end, 1)[0]
    return [line for line in body.strip().strip("`").strip().splitlines() if line.strip()]


def test_architecture_lists_the_imports_of_audioembed_as_they_are():
    expected = import_lines("audioembed")
    assert _block("audioembed") == expected, "ARCHITECTURE.md's audioembed imports should read:\n" + "\n".join(expected)


def test_architecture_lists_the_imports_of_training_as_they_are():
    expected = import_lines("training")
    assert _block("training") == expected, "ARCHITECTURE.md's training imports should read:\n" + "\n".join(expected)


def test_every_module_is_in_the_architecture_tables():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    for package in ("audioembed", "training"):
        for name in _package_modules(package):
            rel = name[len(package) + 1:].replace(".", "/")
            assert f"{rel}.py" in text or f"`{rel.split('/')[0]}/`" in text, f"{rel}.py is not in ARCHITECTURE.md"


def test_audioembed_never_imports_training():
    modules = _package_modules("audioembed")
    training = set(_package_modules("training"))
    for name, path in modules.items():
        names = {n for n in training} | {"training"}
        assert not _imports_of(path, names), f"{name} imports training"


# --- the conventions ARCHITECTURE.md states, for training/ --------------------------------------

BUILTIN_ERRORS = {n for n in dir(__import__("builtins")) if n.endswith(("Error", "Exception"))}


def _cli_files() -> list[Path]:
    return sorted({*ROOT.joinpath("training").rglob("cli.py"), ROOT / "training" / "model_card.py"})


def test_training_clis_catch_audioembed_errors_only():
    """An except clause that turns an error into a CLI message names AudioembedErrors, never a
    builtin: a bug in training should stay a traceback."""
    bad = []
    for path in _cli_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ExceptHandler) or node.type is None:
                continue
            types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            names = {t.id if isinstance(t, ast.Name) else getattr(t, "attr", "") for t in types}
            raises_click = any(isinstance(n, ast.Raise) and "Click" in ast.unparse(n) for n in ast.walk(node))
            if raises_click and names & BUILTIN_ERRORS:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} except {sorted(names)}")
    assert bad == []


def test_training_writes_files_through_atomic_write():
    """No ``write_text``/``write_bytes`` or text-mode ``open(..., "w")`` in training/: files are
    written through audioembed.outputs.atomic_write (appended logs and lock files aside)."""
    # The appended train_log, the corpus build's lock file, and the feature cache's block files,
    # streamed into a temporary name and renamed at the end (atomic, but too large for one write).
    allowed = {("training/trainer.py", "a"), ("training/corpus/debian.py", "w"),
               ("training/feature_cache.py", "w")}
    bad = []
    for path in sorted(ROOT.joinpath("training").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("write_text", "write_bytes"):
                bad.append(f"{rel}:{node.lineno} {func.attr}")
            if isinstance(func, ast.Name) and func.id == "open" and len(node.args) > 1:
                mode = node.args[1].value if isinstance(node.args[1], ast.Constant) else ""
                if isinstance(mode, str) and mode[:1] in "wa" and (rel, mode[:1]) not in allowed:
                    bad.append(f"{rel}:{node.lineno} open(..., {mode!r})")
    assert bad == []
