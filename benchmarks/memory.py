"""Peak memory (max RSS) of a training step, minires and PyTorch, each in its own process.

    python benchmarks/memory.py                      # resnet20, batch 128
    python benchmarks/memory.py --model resnet56 --batch 64

Each library runs in a fresh subprocess: import, build the model, 3 training steps
(SGD momentum 0.9, weight decay 5e-4), then it reports resource.getrusage's ru_maxrss
(the peak resident set, in KiB on Linux), before the steps (after import and model
construction) and at the end. The PyTorch figure includes its import (~300 MB of
libraries by itself); the minires process never imports torch.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, resource, sys
import numpy as np
lib, model_name, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, sys.argv[4])
rng = np.random.default_rng(0)
x_np = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
y_np = rng.integers(0, 10, batch)
sys.path.insert(0, os.path.join(sys.argv[4], "benchmarks"))
if lib == "minires":
    import minires as mr, minires.functional as F
    mr.use_speed_settings()          # threads and memory, as the command lines set them
    from bench_step import MODELS
    model = MODELS[model_name][0]()
    opt = mr.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = mr.tensor(x_np)
    def step():
        opt.zero_grad(); F.cross_entropy(model(x), y_np).backward(); opt.step()
else:
    import torch
    from bench_step import MODELS, torch_model
    model = torch_model(torch, *MODELS[model_name][1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np.astype(np.int64))
    def step():
        opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(3):
    step()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_mb": before / 1024, "peak_mb": after / 1024}))
"""


def measure(lib, model, batch):
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out = subprocess.run([sys.executable, "-c", CHILD, lib, model, str(batch), root],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        return None, out.stderr.strip().splitlines()[-1:]
    return json.loads(out.stdout.strip().splitlines()[-1]), None


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    print(f"peak RSS of 3 training steps, {args.model}, batch {args.batch} (MB; 'before' = after "
          f"import and model construction)")
    print(f"{'library':<10}{'before':>10}{'peak':>10}{'peak - before':>15}")
    for lib in ["minires"] + ([] if args.no_torch else ["torch"]):
        result, err = measure(lib, args.model, args.batch)
        if result is None:
            print(f"{lib:<10}  failed: {err}")
            continue
        print(f"{lib:<10}{result['before_mb']:>10.0f}{result['peak_mb']:>10.0f}"
              f"{result['peak_mb'] - result['before_mb']:>15.0f}")


if __name__ == "__main__":
    main()
