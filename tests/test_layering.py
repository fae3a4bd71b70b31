"""Imports only point down: the IR core needs neither torch nor the ops, passes or emitters, and no
package imports one above it (or a sibling at its own level)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import t2ir

ROOT = Path(t2ir.__file__).parent

# Lowest first. A module may import its own group and any group of a lower level.
LAYERS: list[tuple[int, str, tuple[str, ...]]] = [
    (0, "core", ("t2ir.types", "t2ir.ir", "t2ir.printer", "t2ir.parser", "t2ir.verify", "t2ir.errors",
                 "t2ir.options", "t2ir.analysis", "t2ir.paths")),
    (1, "ops", ("t2ir.ops",)),
    (2, "compression", ("t2ir.compression",)),
    (3, "passes", ("t2ir.passes", "t2ir.rewrite")),
    (3, "frontend", ("t2ir.frontend",)),
    (4, "emitters", ("t2ir.emitters",)),
    (4, "runtime", ("t2ir.tract_run", "t2ir.checkio", "t2ir.progress", "t2ir.interpret")),
    (5, "driver", ("t2ir.driver", "t2ir.api", "t2ir.passcheck")),
    (6, "llm", ("t2ir.llm",)),
    (6, "tools", ("t2ir.tools",)),
    (7, "cli", ("t2ir.cli", "t2ir.demo", "t2ir")),
]


def group_of(module: str) -> tuple[int, str]:
    best = None
    for level, name, prefixes in LAYERS:
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[2]:
                    best = (level, name, len(p))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0], best[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def t2ir_imports(path: Path) -> set[str]:
    """Every t2ir module `path` imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("t2ir")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("t2ir"):
            for a in node.names:  # `from t2ir import driver` imports the module t2ir.driver
                sub = f"{node.module}.{a.name}"
                is_module = (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").exists() or \
                    (ROOT.parent / sub.replace(".", "/") / "__init__.py").exists()
                found.add(sub if is_module else node.module)
    return found


def test_no_upward_or_sideways_imports():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        me = module_name(path)
        my_level, my_group = group_of(me)
        for target in t2ir_imports(path):
            if target == "t2ir" and me != "t2ir":
                bad.append(f"{me} imports names from the package root t2ir (import the defining module)")
                continue
            level, group = group_of(target)
            if group != my_group and level >= my_level:
                bad.append(f"{me} ({my_group}, level {my_level}) imports {target} ({group}, level {level})")
    assert not bad, "\n".join(bad)


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where importing torch (or transformers) fails."""
    guard = "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
    return subprocess.run([sys.executable, "-c", guard + code], capture_output=True, text=True, timeout=120)


def test_parse_ir_needs_no_torch():
    r = run_without_torch("import t2ir.parser, t2ir\n"
                          "g = t2ir.parse_ir('graph g\\ninput %x : f32[2]\\n%y = aten.relu(%x) : f32[2]\\noutput %y\\n')\n"
                          "print(len(g))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


def test_dump_and_diff_need_no_torch(tmp_path: Path):
    a = tmp_path / "a.t2ir"
    b = tmp_path / "b.t2ir"
    a.write_text("graph g\ninput %x : f32[2]\n%y = aten.relu(%x) : f32[2]\noutput %y\n")
    b.write_text("graph g\ninput %x : f32[2]\n%y = aten.sigmoid(%x) : f32[2]\noutput %y\n")
    for args in (["dump", str(a)], ["dump", "--stats", str(a)], ["diff", str(a), str(b)]):
        r = run_without_torch(f"import sys; sys.argv = ['t2ir', *{args!r}]\nfrom t2ir.cli import main\nmain()")
        assert r.returncode == 0, (args, r.stderr)
        assert "relu" in r.stdout


def test_structural_diff_and_load_ir_need_no_torch(tmp_path: Path):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    (dumps / "00-lift.t2ir").write_text("graph g\ninput %x : f32[2]\n%y = aten.relu(%x) : f32[2]\noutput %y\n")
    (dumps / "01-lower.t2ir").write_text("graph g\ninput %x : f32[2]\n%y = nnef.relu(%x) : f32[2]\noutput %y\n")
    r = run_without_torch(f"import t2ir\nd = t2ir.diff(t2ir.load_ir({str(dumps)!r}, after='lift'), {str(dumps)!r})\n"
                          "print(d.changed[0].changes)")
    assert r.returncode == 0, r.stderr
    assert "op aten.relu -> nnef.relu" in r.stdout
    for args in (["dump", str(dumps), "--after", "lift"], ["diff", str(dumps), "--pass", "lower"]):
        r = run_without_torch(f"import sys; sys.argv = ['t2ir', *{args!r}]\nfrom t2ir.cli import main\nmain()")
        assert r.returncode == 0, (args, r.stderr)
        assert "relu" in r.stdout
