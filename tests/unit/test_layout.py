"""The package's layout holds: small modules, concrete backends named only by the
composition root and the adapters, faces that do not import each other, and a README
"Layout" section that names every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tileserver"
MAX_LINES = 450
EXEMPT: tuple[str, ...] = ()  # none: every module keeps to the bound
# The entries that dispatch to every command.
ENTRIES = ("tileserver/cli/main.py", "tileserver/cli/scripts.py")


def modules() -> dict[str, Path]:
    return {
        path.relative_to(ROOT).as_posix(): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "vendor" not in path.parts
    }


def imported(path: Path) -> set[str]:
    """Every module path imports, at any depth (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_module_passes_450_lines() -> None:
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in modules().items()
        if name not in EXEMPT
    }
    assert sizes
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


# Not a backend: the process's own life (a server worker dies with its master).
PLATFORM = ("tileserver.adapters.parent_death",)


def test_only_the_composition_root_and_the_adapters_import_backends() -> None:
    importers = {
        name
        for name, path in modules().items()
        if any(
            m.startswith("tileserver.adapters") and not m.startswith(PLATFORM)
            for m in imported(path)
        )
    }
    assert "tileserver/composition.py" in importers
    others = {n for n in importers if not n.startswith("tileserver/adapters/")}
    assert others == {"tileserver/composition.py"}


def test_faces_do_not_import_faces() -> None:
    found = {name: imported(path) for name, path in modules().items()}
    for name, names in found.items():
        if name.startswith("tileserver/web/"):
            assert not any(m.startswith("tileserver.cli") for m in names), name
        if name.startswith("tileserver/cli/") and name not in ENTRIES:
            # The generate and controller commands are apart; `tileserver serve` runs the
            # web face, which only it imports.
            assert "tileserver.cli.controller" not in names, name
            if name != "tileserver/cli/serve.py":
                assert not any(m.startswith("tileserver.web") for m in names), name
        if not name.startswith(("tileserver/cli/", "tileserver/web/", "tileserver/__main__")):
            assert not any(m.startswith(("tileserver.cli", "tileserver.web")) for m in names), (
                f"{name} is below the faces and imports one"
            )
    controller = found["tileserver/cli/controller.py"]
    assert not any(m.startswith("tileserver.cli.generate") for m in controller)


def test_the_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    tree = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    assert tree is not None, "README's Layout section has no ```text tree"
    listed: set[str] = set()
    folders: list[tuple[int, str]] = []  # (indent, folder) of the lines above
    for line in tree[1].splitlines():
        match = re.match(r"( *)(\S+)", line)
        if match is None:
            continue
        indent, entry = len(match[1]), match[2]
        folders = [(i, f) for i, f in folders if i < indent]
        where = "".join(f for _, f in folders)
        if entry.endswith("/"):
            folders.append((indent, entry))
        else:
            listed.add(where + entry)
    expected = {name for name in modules() if not name.endswith("__init__.py")}
    assert expected - listed == set(), "modules missing from README's Layout section"
    assert listed - expected == set(), "README's Layout section names modules that do not exist"
