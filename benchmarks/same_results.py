"""Do two versions of minires compute the same thing? Gradients of a ResNet-20 step, compared.

    git archive c8aca4f minires | tar -x -C /tmp/old      # any earlier version
    python benchmarks/same_results.py /tmp/old             # this tree against /tmp/old
    python benchmarks/same_results.py --self-check         # the size of reordering noise
    python benchmarks/same_results.py --reference          # fast conv2d against reference

Each tree runs in its own subprocess: ResNet-20 (seed 0), one forward/backward of a
fixed batch, in float64 (parameters, buffers and input converted) and in float32.
The table gives, over all parameters, the median and worst relative difference of the
gradients (max |a - b| / max |a| per parameter). Speed-ups that only reorder sums
agree to ~1e-15 in float64, which is the test; in float32 they differ by rounding,
whose size ``--self-check`` shows: this tree against itself with another conv chunk
size (``conv_select.set_chunk_bytes``: a reordering of the GEMM sums and nothing else).
``--reference`` runs this tree's default (fast) conv2d against its reference conv2d
(``F.use_conv("reference")``: im2col, one matmul, col2im). The other tree may be older
than either setting: the child falls back to what that tree has.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD = r"""
import sys, numpy as np
root, out, dtype, chunk, conv = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
sys.path.insert(0, root)
import minires as mr, minires.functional as F
if chunk:
    try:
        from minires.functional.conv_select import set_chunk_bytes
    except ImportError:                  # a tree from before conv_select.py
        try:
            from minires.functional.conv_fast import set_chunk_bytes
        except ImportError:              # a tree from before conv_fast.py: a class attribute
            set_chunk_bytes = None
            from minires.functional.conv import Conv2d
            Conv2d.CPU_CHUNK_BYTES = chunk
    if set_chunk_bytes is not None:
        set_chunk_bytes(chunk)
if conv != "default":
    F.use_conv(conv)
mr.manual_seed(0)
m = mr.models.resnet20(); m.train()
dt = np.dtype(dtype)
for p in m.parameters():
    p.data = p.data.astype(dt)
for _, b in m.named_buffers():
    if b is not None and b.data.dtype.kind == "f":
        b.data = b.data.astype(dt)
rng = np.random.default_rng(0)
x = mr.tensor(rng.standard_normal((32, 3, 32, 32)).astype(dt), dtype=dt)
y = rng.integers(0, 10, 32)
loss = F.cross_entropy(m(x), y)
loss.backward()
np.savez(out, loss=float(loss.data), **{n: p.grad for n, p in m.named_parameters()})
print(mr.__file__)
"""


def run(root, dtype, chunk, path, conv="default"):
    out = subprocess.run([sys.executable, "-c", CHILD, root, path, dtype, str(chunk), conv],
                         capture_output=True, text=True, check=False, cwd=tempfile.gettempdir())
    if out.returncode:
        raise SystemExit(f"{root}: {out.stderr.strip().splitlines()[-1:]}")
    return np.load(path)


def compare(a, b):
    diffs = sorted(float(np.abs(a[k] - b[k]).max() / (np.abs(a[k]).max() + 1e-300))
                   for k in a.files if k != "loss")
    return {"loss a": float(a["loss"]), "loss b": float(b["loss"]),
            "median": diffs[len(diffs) // 2], "worst": diffs[-1]}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", nargs="?", help="root of the other source tree (holds minires/)")
    parser.add_argument("--self-check", action="store_true",
                        help="this tree against itself with 1 MiB instead of 4 MiB conv chunks")
    parser.add_argument("--reference", action="store_true",
                        help="this tree's fast conv2d against its reference conv2d")
    args = parser.parse_args()
    here = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    if not (args.self_check or args.reference or args.other):
        parser.error("give the other tree, or --self-check, or --reference")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float64", "float32"):
            a = run(here, dtype, 0, os.path.join(tmp, f"a_{dtype}.npz"))
            if args.self_check:
                b = run(here, dtype, 1 << 20, os.path.join(tmp, f"b_{dtype}.npz"))
            elif args.reference:
                b = run(here, dtype, 0, os.path.join(tmp, f"b_{dtype}.npz"), conv="reference")
            else:
                b = run(os.path.abspath(args.other), dtype, 0, os.path.join(tmp, f"b_{dtype}.npz"))
            print(dtype, json.dumps(compare(a, b)))


if __name__ == "__main__":
    main()
