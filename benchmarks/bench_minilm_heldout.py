"""MiniLM fidelity of a quantized artifact on sentences slimkit never used, beside its own 400.

Run: python benchmarks/bench_minilm_heldout.py ARTIFACT [ARTIFACT ...]
Prints mean/min cosine and top-10 neighbour agreement against fp32 all-MiniLM-L6-v2 on three sets:

- own: ``slimkit/data/sentences.txt``, the 400 docstring first lines the minilm task measures (and
  that GPTQ's options were tuned on);
- held-out: the next 400 candidates of the same ranking (``scripts/make_sentences.py`` ranks every
  candidate first line by its SHA-256 and keeps the first 400), never used by calibration or tuning;
- members: first docstring lines of public functions and classes of 80 standard-library modules,
  as a new user would collect them, those in the own set left out (400, ranked by SHA-256).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
import sysconfig
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_sentences import COUNT, first_lines  # noqa: E402

from slimkit.data import embed, minilm, sentences  # noqa: E402
from slimkit.data.pycorpus import _stdlib_files  # noqa: E402
from slimkit.io import load  # noqa: E402
from slimkit.models.tasks import _neighbour_agreement  # noqa: E402

MODULES = ("os re json collections itertools functools math statistics string textwrap pathlib datetime decimal "
           "fractions random heapq bisect array struct codecs io shutil glob fnmatch tempfile csv configparser "
           "hashlib hmac secrets logging argparse threading queue subprocess socket ssl select email.message html "
           "xml.etree.ElementTree urllib.parse http.client zipfile tarfile gzip bz2 lzma pickle copy pprint enum "
           "typing dataclasses contextlib abc inspect ast dis tokenize unittest doctest difflib calendar time "
           "zoneinfo uuid base64 binascii operator weakref gc traceback warnings sqlite3 asyncio "
           "concurrent.futures multiprocessing").split()


def _keep(line: str) -> bool:
    return 40 <= len(line) <= 160 and line.endswith(".") and line.isascii() and " " in line


def _ranked(lines) -> list[str]:
    return sorted(set(lines), key=lambda s: hashlib.sha256(s.encode()).hexdigest())


def held_out() -> list[str]:
    """Candidates 401-800 of make_sentences.py's ranking."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return _ranked(line for path in _stdlib_files(root) for line in first_lines(path) if _keep(line))[COUNT:2 * COUNT]


def members() -> list[str]:
    """First docstring lines of the listed modules' public functions and classes, not in the own set."""
    own, found = set(sentences()), []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in dir(module):
            obj = getattr(module, attr, None)
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)
                                            or inspect.ismethod(obj)):
                continue
            doc = inspect.getdoc(obj)
            line = doc.strip().splitlines()[0].strip() if doc else ""
            if _keep(line) and line not in own:
                found.append(line)
    return _ranked(found)[:COUNT]


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    reference = minilm()
    sets = {"own": list(sentences()), "held-out": held_out(), "members": members()}
    float_embeddings = {k: embed(reference.model, reference.tokenizer, v) for k, v in sets.items()}
    print("| artifact | set | cosine mean | cosine min | top-10 agreement |\n|---|---|---|---|---|")
    for path in argv:
        model = load(path).eval()
        for name, texts in sets.items():
            ref, got = float_embeddings[name], embed(model, reference.tokenizer, texts)
            cosine = (got * ref).sum(-1)
            print(f"| {path} | {name} | {cosine.mean():.4f} | {cosine.min():.4f} | "
                  f"{_neighbour_agreement(ref, got, 10):.4f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
