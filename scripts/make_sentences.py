"""Regenerate src/slimkit/data/sentences.txt: first lines of standard-library docstrings.

The file is committed so that the MiniLM fidelity set is the same on every Python version;
run this only to rebuild it (python scripts/make_sentences.py).
"""

import ast
import hashlib
import sysconfig
from pathlib import Path

from slimkit.data.pycorpus import _stdlib_files

COUNT = 400
OUT = Path(__file__).resolve().parents[1] / "src/slimkit/data/sentences.txt"


def first_lines(path: Path):
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield doc.strip().splitlines()[0].strip()


def main() -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    seen = set()
    for path in _stdlib_files(root):
        for line in first_lines(path):
            if 40 <= len(line) <= 160 and line.endswith(".") and line.isascii() and " " in line:
                seen.add(line)
    ranked = sorted(seen, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    OUT.write_text("\n".join(ranked[:COUNT]) + "\n", encoding="utf-8")
    print(f"wrote {COUNT} of {len(seen)} candidate sentences to {OUT}")


if __name__ == "__main__":
    main()
