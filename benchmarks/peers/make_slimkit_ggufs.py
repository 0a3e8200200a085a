"""slimkit-written GGUFs of SmolLM2-135M for llama.cpp to read (issue 20), made in the PROJECT venv.

    nice -n 10 .venv/bin/python benchmarks/peers/make_slimkit_ggufs.py --out /tmp

For int8 and int4 (RTN, symmetric, groups of 32, float16 scales: what `slimkit quantize FOLDER --weights
int8|int4 --group-size 32` does) it quantizes the zoo's float folder with the Python API (the CLI would do
the same and then spend ~15 minutes on its before/after table, which this benchmark does not need), saves
the artifact to OUT/s8 and OUT/s4, and runs `slimkit export OUT/sN --to gguf --out OUT/sNg`.

The zoo's converted folder has `_model_name_or_path` in config.json (transformers writes it when it reads
a GGUF), and slimkit refuses to load an artifact whose config has it ("keys ['_model_name_or_path'] choose
code to run"), so an artifact quantized straight from the zoo folder cannot be exported or loaded. This
script quantizes a copy of the folder (OUT/smollm2-clean: the same files, linked, with that one key left
out of config.json) instead.

Then, in the peers venv:
    bench_llamacpp_smollm2.py ... --skip-peers --extra slimkit-int8=OUT/s8g/FILE.gguf,OUT/s8 --extra ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def clean_folder(folder: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        link = target / item.name
        if item.name == "config.json":
            config = json.loads(item.read_text())
            config.pop("_model_name_or_path", None)
            link.write_text(json.dumps(config, indent=2))
        elif not link.exists():
            os.symlink(item, link)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp"))
    parser.add_argument("--formats", default="int8,int4")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    import slimkit
    from slimkit.models import zoo
    from slimkit.quantization import WeightQuantConfig

    folder = clean_folder(zoo.hf_folder("smollm2"), args.out / "smollm2-clean")
    for fmt in args.formats.split(","):
        short = {"int8": "s8", "int4": "s4"}[fmt]
        start = time.perf_counter()
        model = slimkit.load(folder)
        slimkit.quantize(model, WeightQuantConfig(format=fmt, group_size=32, method="rtn"))
        artifact = slimkit.save(model, args.out / short, companions=folder)
        print(f"{fmt} g32 rtn: saved {artifact} in {time.perf_counter() - start:.1f} s", flush=True)
        cmd = [str(Path(sys.executable).parent / "slimkit"), "export", str(artifact), "--to", "gguf",
               "--out", str(args.out / f"{short}g"), "--force"]
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        for f in sorted((args.out / f"{short}g").iterdir()):
            print(f"  {f} {f.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
