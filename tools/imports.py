"""Print gpenvideo's import graph (read with `ast`, nothing imported) and check the layout's
rules (../shared/DESIGN.md, "Import rules"):

- only gpenvideo/media/ imports av;
- no stage (detector, tracker, register, restorer, compositor, quality) imports another
  stage, nor engine, segments, api, cli, batch or media (stages import only frames, errors,
  config, align and models);
- frames and errors import nothing from the package; config only errors;
- tracker imports no third-party package but numpy and scipy.

    python tools/imports.py          # the graph, then each broken rule; exit 1 if any
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "gpenvideo"
STAGES = {"detector", "tracker", "register", "restorer", "compositor", "quality"}
STAGE_MAY_IMPORT = {"frames", "errors", "config", "align", "models"}
LEAVES = {"frames": set(), "errors": set(), "config": {"errors"}}
TRACKER_THIRD_PARTY = {"numpy", "scipy"}
STDLIB = set(sys.stdlib_module_names)


def module_name(path: Path, root: Path) -> str:
    """gpenvideo/media/decode.py -> media.decode; gpenvideo/media/__init__.py -> media."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """(modules of the package, top-level outside packages) that `path` imports anywhere in
    it (function-level imports included). root: the package's folder; modules: its modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = list(path.parent.relative_to(root).parts)
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == PACKAGE:
                    inside.add(alias.name.split(".", 1)[1] if "." in alias.name else "")
                else:
                    outside.add(top)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                top = (node.module or "").split(".")[0]
                if top == PACKAGE:
                    inside.add((node.module or "").partition(".")[2])
                elif top != "__future__":
                    outside.add(top)
                continue
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join([*base, *([node.module] if node.module else [])])
            if node.module:
                inside.add(target)
            else:  # from . import a, b (modules, or names of the package itself)
                for alias in node.names:
                    name = ".".join([*base, alias.name])
                    inside.add(name if name in modules else ".".join(base))
    inside.discard("")
    return inside, outside - STDLIB - {PACKAGE}


def graph(root: Path) -> dict[str, tuple[set[str], set[str]]]:
    """module -> (package modules it imports, third-party packages it imports)."""
    folder = root / PACKAGE
    paths = sorted(folder.rglob("*.py"))
    modules = {module_name(p, folder) for p in paths}
    return {module_name(p, folder) or PACKAGE: imports_of(p, folder, modules) for p in paths}


def top(name: str) -> str:
    return name.split(".")[0]


def broken_rules(g: dict[str, tuple[set[str], set[str]]]) -> list[str]:
    """One line per import that breaks a rule."""
    problems = []
    for module, (inside, outside) in g.items():
        if "av" in outside and top(module) != "media":
            problems.append(f"{module} imports av (only gpenvideo.media may)")
        if module in STAGES:
            for other in sorted(inside):
                if top(other) not in STAGE_MAY_IMPORT:
                    problems.append(f"stage {module} imports {other}")
        if module in LEAVES:
            for other in sorted(inside):
                if top(other) not in LEAVES[module]:
                    problems.append(f"{module} imports {other} (it may import "
                                    f"{', '.join(sorted(LEAVES[module])) or 'nothing'} "
                                    "of the package)")
        if module == "tracker":
            for package in sorted(outside - TRACKER_THIRD_PARTY):
                problems.append(f"tracker imports {package} (numpy and scipy only)")
    return problems


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    g = graph(root)
    for module, (inside, outside) in g.items():
        print(f"{module:22} -> {', '.join(sorted(inside)) or '-'}"
              f"{'   [' + ', '.join(sorted(outside)) + ']' if outside else ''}")
    problems = broken_rules(g)
    print()
    for line in problems:
        print(f"RULE BROKEN: {line}")
    print("import rules: all kept" if not problems else f"{len(problems)} import rules broken")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
