"""A Q4_K GGUF written by llama.cpp itself, imported by slimkit: same logits as transformers, same bytes back.

Run from the project venv; llama.cpp's quantizer runs in the peers' venv (``--llama-python``):
    python benchmarks/peers/check_llamacpp_q4_k.py --llama-python /work/peers/llamacpp/bin/python

A randomly initialised Llama (hidden 256, MLP 512, untied embeddings: Q4_K needs rows of whole 256-blocks)
is written as an F32 GGUF by slimkit, quantized by llama.cpp's ``llama_model_quantize`` to Q4_K_S with
``pure`` (every tensor Q4_K, embeddings and output included) and to the default Q4_K_M mix, then imported.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

QUANTIZE = """
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype, params.pure, params.nthread = int(sys.argv[3]), sys.argv[4] == "pure", 2
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""
FTYPES = {"Q4_K_S pure": (14, "pure"), "Q4_K_M": (15, "mix")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-python", required=True, help="python of the venv where llama-cpp-python is built")
    args = parser.parse_args()
    import transformers

    import slimkit
    from slimkit.deployment.gguf_reader import TYPE_NAMES, read_gguf
    from slimkit.machine import machine_line

    print(machine_line(torch.get_num_threads()))
    warnings.simplefilter("ignore")
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    work = Path(tempfile.mkdtemp())
    source = slimkit.export(model, work / "f32", to="gguf") / "model.gguf"
    for label, (ftype, pure) in FTYPES.items():
        folder = work / label.replace(" ", "-")
        folder.mkdir()
        path = folder / "model.gguf"
        subprocess.run([args.llama_python, "-c", QUANTIZE, str(source), str(path), str(ftype), pure], check=True,
                       capture_output=True)
        _, infos, data = read_gguf(path)
        types = sorted({TYPE_NAMES.get(i.ggml_type, str(i.ggml_type)) for i in infos.values()})
        try:
            imported = slimkit.load(path)
        except Exception as exc:  # what a mix with other K-quants gets: one line naming the tensor
            print(f"| {label} | {', '.join(types)} | refused: {exc} | | |")
            continue
        theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=path.name).eval()
        with torch.inference_mode():
            ours_logits, their_logits = imported(ids).logits, theirs(ids).logits
        back = slimkit.export(imported, work / f"{folder.name}-back", to="gguf") / "model.gguf"
        _, infos_back, data_back = read_gguf(back)
        same = sorted(infos) == sorted(infos_back) and all(
            data[i.offset:i.offset + i.nbytes] == data_back[infos_back[k].offset:infos_back[k].offset + infos_back[k].nbytes]
            for k, i in infos.items())
        kinds = sorted({type(m).__name__ for m in imported.modules() if type(m).__name__.startswith("GGML")})
        print(f"| {label} | {', '.join(types)} | imported as {', '.join(kinds)} | "
              f"{(ours_logits - their_logits).abs().max().item():.1e} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    sys.exit(main())
