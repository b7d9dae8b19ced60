"""The package's shape (docs/architecture.md): every import in xtc/ -- function bodies included -- points down the
layers the architecture page states, nothing imports in a circle, and the workflow's wing imports without torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "xtc"


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package's ``__init__`` under the package's name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _owner(name: str, modules: dict[str, Path]) -> str:
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, set[str]]:
    """Module -> the xtc modules it imports anywhere in its file (``ast.walk``: inside functions too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {_owner(a.name, modules) for a in node.names if a.name.split(".")[0] == "xtc"}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "xtc":
                for alias in node.names:  # `from xtc.study import grid` imports the module xtc.study.grid
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else _owner(node.module, modules))
            elif isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{path}: relative import; xtc imports by absolute name")
        graph[name] = targets - {name}
    return graph


def stated_layers() -> dict[str, int]:
    """Module -> layer, from the layer table of docs/architecture.md (``dir/`` names a whole folder)."""
    table = (REPO / "docs" / "architecture.md").read_text()
    layers: dict[str, int] = {}
    for level, cell in re.findall(r"^\| L(\d) \| ([^|]+) \|", table, flags=re.M):
        for entry in re.findall(r"`([^`]+)`", cell):
            layers["xtc." + entry.removesuffix(".py").removesuffix("/").replace("/", ".").removesuffix(".__init__")
                   if entry != "__init__.py" else "xtc"] = int(level)
    return layers


def layer_of(module: str, layers: dict[str, int]) -> int:
    name = module
    while name not in layers:
        assert "." in name, f"{module} is in no layer of docs/architecture.md's table; add it there"
        name = name.rpartition(".")[0]
    return layers[name]


def test_the_layer_table_names_every_module_once_and_only_real_ones():
    layers, modules = stated_layers(), _modules()
    assert len(layers) >= 20
    for entry in layers:
        assert entry in modules, f"docs/architecture.md names {entry}, which is not a module of xtc/"
    for module in modules:
        layer_of(module, layers)


def test_every_import_points_down_the_stated_layers():
    layers = stated_layers()
    upward = [f"{m} (L{layer_of(m, layers)}) imports {t} (L{layer_of(t, layers)})"
              for m, targets in import_graph().items() for t in sorted(targets)
              if layer_of(t, layers) > layer_of(m, layers)]
    assert not upward, "imports pointing up the layers of docs/architecture.md:\n" + "\n".join(upward)


def test_no_import_cycle_even_through_function_bodies():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_sees_imports_inside_functions(tmp_path):
    """The walker finds an import written inside a function body (the kind the engine/export circle used)."""
    source = "def f():\n    from xtc.packed.engine import load_engine\n    return load_engine\n"
    found = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)]
    assert [n.module for n in found] == ["xtc.packed.engine"]


def test_the_root_stays_small():
    """A flat core that fits in one's head; wings get folders (about 22 modules at the root at most)."""
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 22, root


def test_the_study_wing_imports_without_torch():
    modules = [m for m in _modules() if m == "xtc.study" or m.startswith("xtc.study.")]
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'transformers', 'datasets', 'safetensors'):\n"
            "            raise ImportError(f'{name} is blocked in this test')\n"
            "sys.meta_path.insert(0, Block())\n"
            f"for m in {modules!r}:\n"
            "    __import__(m)\n"
            "print(len(sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(modules) >= 6
