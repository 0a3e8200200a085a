"""Peer benchmark (issue 19): slimkit's techniques on the real torchvision and timm model code, beside torch.ao
and Torch-Pruning.

torchvision and timm are not slimkit dependencies (the torchvision wheel matching torch 2.13.0 is built
against a CUDA torch), so this runs in its own venv:

    python3.11 -m venv /work/peers/vision && . /work/peers/vision/bin/activate
    pip install torch==2.13.0
    pip install -e /work/main torch==2.13.0
    pip install --no-deps torchvision==0.28.0
    pip install --no-deps timm
    pip install huggingface_hub torch==2.13.0
    pip install --no-deps torch-pruning

torchvision 0.28.0's compiled ops (_C.so) link libc10_cuda.so / libtorch_cuda.so, which the CPU torch
lacks, so they do not load; ``import torchvision`` then fails in _meta_registrations.py
(``register_fake("torchvision::nms")``: "operator torchvision::nms does not exist"). The classification
models need none of those ops: ``_torchvision_op_stubs`` defines the two op schemas (no kernels) that the
import registers fake implementations for, and the import goes through.

Models: torchvision resnet18, mobilenet_v2, mobilenet_v3_small, timm vit_tiny_patch16_224, random weights
(seed 0, no downloads), BatchNorm given trained-like running statistics (tests/reference/vision.py's
``trained_statistics``, as benchmarks/bench_static_resnet18.py does), eval mode. Inputs: random 224x224
images (standard normal, seed 1): --calib batches of 8 for calibration, --test other images held out.

Techniques, each on a fresh copy of the float model, through slimkit's public API:
  int8 weight-only  slimkit.quantize(m, WeightQuantConfig("int8"))
  W8A8 static       slimkit.quantize(m, ActivationQuantConfig(mode="static"), calib=calib)
  50% unstructured  slimkit.prune(m, PruneConfig(sparsity=0.5))
  30% structured    slimkit.prune(m, PruneConfig(structured=True, ratio=0.3), data=calib, example_inputs=calib[0])
  torch.ao static   FX graph mode, get_default_qconfig_mapping("x86"), the same calibration batches
  Torch-Pruning     MetaPruner, L1 (MagnitudeImportance(p=1)), pruning_ratio=0.3, final classifier ignored
                    (ViT: num_heads given, head dims pruned, as Torch-Pruning's timm ViT example)
A technique that raises is recorded with its message (a refusal is a result).

Per variant: mean cosine of the logits to fp32's over the held-out images, top-1 agreement with fp32,
parameters (slimkit.evaluation.parameter_counts: logical and nonzero), bytes of ``torch.save(state_dict)``,
bytes of the slimkit artifact, layers the manifest records as transformed, batch-1 latency (2 threads,
slimkit.timing.latency_ms median of 5 after a warm-up; over --rounds interleaved rounds the median and the
minimum, and the median of the per-round ratios to fp32), and the slimkit.save + slimkit.load round trip
(max |difference| of the logits on 8 held-out images; "exact" when torch.equal).

Top-1 agreement is weak evidence on random-weight CNNs: their fp32 top-1 is often one class for every
image (the table header says how many distinct classes fp32 predicts), so it reads 1 or 0.

Run (in the venv above):
    nice -n 10 python benchmarks/peers/bench_real_vision.py --out /work/team/out/real_vision_tables.md
    [--models resnet18,mobilenet_v2,mobilenet_v3_small,vit_tiny] [--rounds 5] [--batch64]
"""

from __future__ import annotations

import argparse
import copy
import io
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

_STUBS = torch.library.Library("torchvision", "DEF")  # kept alive: the schemas live as long as this object


def _torchvision_op_stubs() -> None:
    """Define the op schemas torchvision's import registers fake kernels for, when its _C.so did not load."""
    import importlib.util

    spec = importlib.util.find_spec("torchvision")
    try:  # where the extension loads (a CUDA torch), torchvision needs no stubs
        torch.ops.load_library(str(Path(spec.origin).parent / "_C.so"))
        return
    except (OSError, ImportError, TypeError):
        pass
    for schema in ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                   "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor"):
        try:
            _STUBS.define(schema)
        except RuntimeError:
            pass  # already defined (the extension did load)


_torchvision_op_stubs()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import timm  # noqa: E402
    import torchvision  # noqa: E402

import slimkit  # noqa: E402
from slimkit.evaluation import parameter_counts  # noqa: E402
from slimkit.io import artifact_bytes  # noqa: E402
from slimkit.machine import machine_line  # noqa: E402
from slimkit.manifest import get_manifest  # noqa: E402
from slimkit.pruning import PruneConfig  # noqa: E402
from slimkit.quantization import ActivationQuantConfig, WeightQuantConfig  # noqa: E402
from slimkit.timing import latency_ms  # noqa: E402
from tests.reference.vision import trained_statistics  # noqa: E402


def vit_tiny():
    return timm.create_model("vit_tiny_patch16_224", pretrained=False)


BUILDERS = {"resnet18": torchvision.models.resnet18, "mobilenet_v2": torchvision.models.mobilenet_v2,
            "mobilenet_v3_small": torchvision.models.mobilenet_v3_small, "vit_tiny": vit_tiny}


def classifier(model: nn.Module) -> nn.Module:
    for attr in ("fc", "head"):
        if isinstance(getattr(model, attr, None), nn.Linear):
            return getattr(model, attr)
    return [m for m in model.classifier.modules() if isinstance(m, nn.Linear)][-1]


def short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"


@torch.no_grad()
def logits(model, images: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    return torch.cat([model(images[i:i + chunk]) for i in range(0, len(images), chunk)])


def state_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def transformed(model: nn.Module) -> int:
    return sum(1 for e in get_manifest(model) if "skipped" not in e and e.get("technique") != "fusion")


# ---------------------------------------------------------------- techniques
def slimkit_int8(model, calib):
    slimkit.quantize(model, WeightQuantConfig("int8"))
    return model


def slimkit_static(model, calib):
    slimkit.quantize(model, ActivationQuantConfig(mode="static"), calib=calib)
    return model


def slimkit_sparse(model, calib):
    slimkit.prune(model, PruneConfig(sparsity=0.5))
    return model


def slimkit_structured(model, calib):
    slimkit.prune(model, PruneConfig(structured=True, ratio=0.3), data=calib, example_inputs=calib[0])
    return model


def torch_ao_static(model, calib):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (calib[0],))
        with torch.no_grad():
            for x in calib:
                prepared(x)
        return convert_fx(prepared)


def torch_pruning(model, calib):
    import torch_pruning as tp

    kwargs = {}
    attention = [m for m in model.modules() if isinstance(m, timm.layers.Attention)]
    if attention:
        kwargs = {"num_heads": {m.qkv: m.num_heads for m in attention}, "prune_head_dims": True,
                  "prune_num_heads": False}
    pruner = tp.pruner.MetaPruner(model, calib[0][:1], importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.3, ignored_layers=[classifier(model)], **kwargs)
    pruner.step()
    for m in attention:  # as Torch-Pruning's timm example: the forward reads these
        m.num_heads = pruner.num_heads[m.qkv]
        m.head_dim = m.qkv.out_features // (3 * m.num_heads)
        m.attn_dim = m.num_heads * m.head_dim
        m.scale = m.head_dim ** -0.5
    return model


TECHNIQUES = {
    "slimkit int8 weight-only": slimkit_int8,
    "slimkit W8A8 static": slimkit_static,
    "slimkit 50% unstructured": slimkit_sparse,
    "slimkit 30% structured": slimkit_structured,
    "torch.ao FX static int8 (x86)": torch_ao_static,
    "Torch-Pruning 30% structured (L1)": torch_pruning,
}


def round_trip(model, name: str, images: torch.Tensor, tmp: Path) -> str:
    """slimkit.save + slimkit.load: max |logit difference| on ``images``, or the refusal."""
    try:
        saved = slimkit.save(model, tmp / name.replace(" ", "_"), init_args={})
    except Exception as exc:  # noqa: BLE001 - a refusal is a result
        return f"save refused: {short(exc)}"
    try:
        loaded = slimkit.load(saved).eval()
    except Exception as exc:  # noqa: BLE001
        return f"load failed: {short(exc)}"
    with torch.no_grad():
        a, b = model(images), loaded(images)
    diff = (a - b).abs().max().item()
    return "exact (0)" if torch.equal(a, b) else f"max abs diff {diff:.3g}"


def run_family(family: str, args, tmp: Path, out) -> None:
    torch.manual_seed(0)
    fp32 = trained_statistics(BUILDERS[family]())
    slimkit.register_class(type(fp32), name=f"bench.{family}", factory=BUILDERS[family])
    g = torch.Generator().manual_seed(1)
    calib = [torch.randn(8, 3, 224, 224, generator=g) for _ in range(args.calib)]
    test = torch.randn(args.test, 3, 224, 224, generator=g)
    x1 = torch.randn(1, 3, 224, 224, generator=g)
    reference = logits(fp32, test)
    layers = sum(1 for m in fp32.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    models, rows, notes = {"fp32": fp32}, {}, []
    base_bytes = state_bytes(fp32)
    for name, technique in [("fp32", None), *TECHNIQUES.items()]:
        if name.startswith("Torch-Pruning") and not args.torch_pruning:
            continue
        start = time.perf_counter()
        try:
            model = fp32 if technique is None else technique(copy.deepcopy(fp32), calib)
            model.eval()
        except Exception as exc:  # noqa: BLE001 - a refusal is a result
            notes.append(f"- **{name}** refused/failed: `{short(exc)}`")
            rows[name] = None
            print(f"[{family}] {name}: {short(exc)}", flush=True)
            if args.verbose:
                traceback.print_exc()
            continue
        seconds = time.perf_counter() - start
        try:
            got = logits(model, test)
        except Exception as exc:  # noqa: BLE001 - the transform returned a model that cannot run
            notes.append(f"- **{name}**: the transform returned ({seconds:.1f} s) but the model's forward fails: "
                         f"`{short(exc)}`")
            rows[name] = None
            print(f"[{family}] {name}: forward fails after the transform: {short(exc)}", flush=True)
            if args.verbose:
                traceback.print_exc()
            continue
        cos = F.cosine_similarity(got, reference, dim=-1).mean().item()
        agree = (got.argmax(-1) == reference.argmax(-1)).float().mean().item()
        ao = name.startswith("torch.ao")
        params, nonzero = (None, None) if ao else parameter_counts(model)
        sbytes = state_bytes(model)
        if ao:
            trip, abytes = "n/a (torch.ao GraphModule)", None
        else:
            trip = round_trip(model, f"{family}-{name}", test[:8], tmp)
            folder = tmp / f"{family}-{name}".replace(" ", "_")
            abytes = artifact_bytes(folder) if folder.is_dir() else None
        rows[name] = {"cos": cos, "agree": agree, "params": params, "nonzero": nonzero, "bytes": sbytes,
                      "ratio_bytes": sbytes / base_bytes, "artifact": abytes, "trip": trip, "seconds": seconds,
                      "transformed": None if ao or technique is None else transformed(model)}
        models[name] = model
        print(f"[{family}] {name}: cos {cos:.5f} agree {agree:.3f} params {params} nonzero {nonzero} "
              f"bytes {sbytes} artifact {abytes} trip {trip} ({seconds:.1f} s)", flush=True)
    # batch-1 latency, interleaved rounds so that load from other processes hits every variant alike
    times = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, model in models.items():
                times[name].append(latency_ms(lambda m=model: m(x1), runs=5, warmup=1, threads=args.threads))
    base = rows["fp32"]["params"]
    out.write(f"\n### {family} ({type(fp32).__module__}.{type(fp32).__name__}, {base:,} parameters, "
              f"{layers} Linear/Conv2d layers; fp32's top-1 over the {len(test)} held-out images takes "
              f"{len(set(reference.argmax(-1).tolist()))} distinct classes)\n\n")
    out.write("| variant | cosine to fp32 | top-1 agree | params (nonzero) | params ratio | state_dict bytes "
              "(ratio) | slimkit artifact bytes | layers transformed | batch-1 ms median / min (ratio to fp32) | "
              "save/load round trip |\n|---|---|---|---|---|---|---|---|---|---|\n")
    for name, r in rows.items():
        if r is None:
            out.write(f"| {name} | failed (see notes) | | | | | | | | |\n")
            continue
        ratio = statistics.median(t / b for t, b in zip(times[name], times["fp32"]))
        params = "n/a (packed)" if r["params"] is None else f"{r['params']:,} ({r['nonzero']:,})"
        pratio = "" if r["params"] is None else f"{r['params'] / base:.3f} ({r['nonzero'] / base:.3f} nz)"
        art = "" if r["artifact"] is None else f"{r['artifact']:,}"
        done = "" if r["transformed"] is None else str(r["transformed"])
        out.write(f"| {name} | {r['cos']:.5f} | {r['agree']:.3f} | {params} | {pratio} | {r['bytes']:,} "
                  f"({r['ratio_bytes']:.3f}) | {art} | {done} | {statistics.median(times[name]):.1f} / "
                  f"{min(times[name]):.1f} ({ratio:.2f}) "
                  f"| {r['trip']} |\n")
    if notes:
        out.write("\n" + "\n".join(notes) + "\n")
    if family == "resnet18" and args.batch64:
        pair = {n: models[n] for n in ("slimkit W8A8 static", "torch.ao FX static int8 (x86)") if n in models}
        x64 = torch.randn(64, 3, 224, 224, generator=g)
        t64 = {n: [] for n in pair}
        with torch.no_grad():
            for _ in range(2):
                for n, m in pair.items():
                    t64[n].append(latency_ms(lambda m=m: m(x64), runs=5, warmup=1, threads=args.threads))
        out.write("\nresnet18 batch 64 (2 interleaved rounds):\n\n| variant | batch-64 ms median / min |\n|---|---|\n")
        for n, ts in t64.items():
            out.write(f"| {n} | {statistics.median(ts):.1f} / {min(ts):.1f} |\n")
    out.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(BUILDERS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calib", type=int, default=4, help="calibration batches of 8 images")
    parser.add_argument("--test", type=int, default=32, help="held-out images")
    parser.add_argument("--batch64", action="store_true", help="also time resnet18 static int8 at batch 64")
    parser.add_argument("--no-torch-pruning", dest="torch_pruning", action="store_false")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--out", default="real_vision_tables.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with open(args.out, "w") as out, tempfile.TemporaryDirectory() as tmp:
        out.write(f"{machine_line(args.threads)}\n\ntorch {torch.__version__}, torchvision {torchvision.__version__}, "
                  f"timm {timm.__version__}, slimkit {slimkit.__version__}\n")
        for family in args.models.split(","):
            run_family(family, args, Path(tmp), out)
        out.write(f"\nwhole run: {time.perf_counter() - start:.0f} s\n")
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
