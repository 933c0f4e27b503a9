"""Architecture rules of ``src/``, checked on the syntax tree (no import, runs in well under a second).

- No function or method is longer than ``MAX_LINES`` lines (``def`` line to last line, decorators excluded).
- No public function or method (name not starting with ``_``) outside ``scsc/cli/`` takes more than
  ``MAX_PARAMS`` parameters: ``self``/``cls`` are not counted, ``*args`` and ``**kwargs`` count one each.
  Typer commands declare one parameter per command-line option, hence the exception for ``scsc/cli/``.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 60
MAX_PARAMS = 8


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _n_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = fn.args
    names = [a.arg for a in (*args.posonlyargs, *args.args)]
    n = len(names) + len(args.kwonlyargs) + (args.vararg is not None) + (args.kwarg is not None)
    return n - 1 if names and names[0] in ("self", "cls") else n


def offenders(source: str, name: str, is_cli: bool = False) -> list[str]:
    """The rule violations in one module's ``source``, as ``name:line function (why)``."""
    found = []
    for fn in _functions(ast.parse(source)):
        lines = fn.end_lineno - fn.lineno + 1
        if lines > MAX_LINES:
            found.append(f"{name}:{fn.lineno} {fn.name} ({lines} lines > {MAX_LINES})")
        n = _n_params(fn)
        if not is_cli and not fn.name.startswith("_") and n > MAX_PARAMS:
            found.append(f"{name}:{fn.lineno} {fn.name} ({n} parameters > {MAX_PARAMS})")
    return found


def scan(root: Path = SRC) -> list[str]:
    """Every violation under ``root`` (a ``src`` folder)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        found += offenders(
            path.read_text(encoding="utf-8"), rel.as_posix(), is_cli=rel.parts[:2] == ("scsc", "cli")
        )
    return found


def test_src_follows_the_architecture_rules():
    assert SRC.is_dir()
    found = scan()
    assert not found, "architecture rules broken (tests/test_architecture.py):\n" + "\n".join(found)


def _long_function(n_lines: int, name: str = "f") -> str:
    body = "\n".join(f"    x{i} = {i}" for i in range(n_lines - 2))
    return f"@decorator\ndef {name}():\n{body}\n    return 0\n"


def test_the_line_rule_counts_from_def_to_the_last_line():
    assert offenders(_long_function(MAX_LINES), "m.py") == []
    assert offenders(_long_function(MAX_LINES + 1), "m.py") == ["m.py:2 f (61 lines > 60)"]
    method = "class C:\n" + textwrap.indent(_long_function(MAX_LINES + 1, "_private"), "    ")
    assert offenders(method, "m.py") == ["m.py:3 _private (61 lines > 60)"]
    assert offenders(_long_function(MAX_LINES + 1), "cli.py", is_cli=True) != []  # the CLI is no exception


def test_the_parameter_rule_counts_public_signatures_outside_the_cli():
    eight = "def f(a, b, c, d, e, *args, h=1, **kwargs): pass\n"  # *args and **kwargs: one each
    nine = "def f(a, /, b, c, d, e, g, h, *, i=1, j=2): pass\n"
    assert offenders(eight, "m.py") == []
    assert offenders(nine, "m.py") == ["m.py:1 f (9 parameters > 8)"]
    assert offenders("class C:\n    def f(self, a, b, c, d, e, g, h, i): pass\n", "m.py") == []
    assert offenders("class C:\n    def f(self, a, b, c, d, e, g, h, i, j): pass\n", "m.py") != []
    assert offenders(nine.replace("def f", "def _f"), "m.py") == []  # private
    assert offenders(nine, "cli.py", is_cli=True) == []  # a Typer command


def test_scan_reports_a_long_function_in_a_copy_of_src(tmp_path):
    pkg = tmp_path / "src" / "scsc"
    pkg.mkdir(parents=True)
    (pkg / "fine.py").write_text(_long_function(10))
    assert scan(tmp_path / "src") == []
    (pkg / "long.py").write_text(_long_function(MAX_LINES + 5, "too_long"))
    assert scan(tmp_path / "src") == ["scsc/long.py:2 too_long (65 lines > 60)"]
