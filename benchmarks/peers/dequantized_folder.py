"""A slimkit artifact's dequantized weights as a plain float Hugging Face folder (peers venv).

    python benchmarks/peers/dequantized_folder.py /tmp/s8 /tmp/smollm2-clean /tmp/s8-deq
    python $LLAMA_SRC/convert_hf_to_gguf.py /tmp/s8-deq --outtype f32 --outfile /tmp/s8-deq-f32.gguf

Every QuantLinear's ``dequantized_weight(float32)`` is copied into the float model of FLOAT_FOLDER (the
folder the artifact was quantized from), which is saved with its tokenizer files. llama.cpp then runs the
same weights as slimkit's model in F32, without the 8-bit activation blocks its Q8_0/Q4_0 matmuls use: a
check that separates the exported weights from llama.cpp's arithmetic.
"""

import shutil
import sys

import torch
from transformers import AutoModelForCausalLM

import slimkit
from slimkit.quantization.modules import QuantLinear


def main() -> None:
    artifact, float_folder, out = sys.argv[1:4]
    quantized = slimkit.load(artifact)
    model = AutoModelForCausalLM.from_pretrained(float_folder, local_files_only=True)
    modules = dict(model.named_modules())
    replaced = 0
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if isinstance(module, QuantLinear):
                modules[name].weight.copy_(module.dequantized_weight(torch.float32))
                replaced += 1
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{float_folder}/{name}", out)
    print(f"{out}: {replaced} layers dequantized from {artifact}")


if __name__ == "__main__":
    main()
