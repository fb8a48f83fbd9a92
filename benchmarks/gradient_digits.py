"""How many digits a gradient ratio at initialisation has: minires against PyTorch, float32
and float64, on the same weights and batch, under perturbations below float32's resolution.

    python benchmarks/gradient_digits.py                  # plain56 and resnet56, 64 images
    python benchmarks/gradient_digits.py --models plain20 --perturbations 4

The ratio is ``FlowReport.summary()["first_over_last"]``: the first layer's weight-gradient
norm over the last layer's, one forward and backward pass in train mode with cross-entropy
(what lesson 06 and ``python -m minires.experiments gradient-at-init`` print). Each net is
built with ``mr.manual_seed(0)`` and exported with ``minires.export.to_torch``, so both
libraries hold the same weights. The batch is the first 64 CIFAR-10 training images
(normalised, as lesson 06 loads them), each pixel multiplied by ``1 + 1e-7 * z`` (z
standard normal, a fresh draw per row of the table; the first row is unperturbed).

If float64 moves as much as float32 under such perturbations, the spread is the function's
(a chaotic backward pass), not the arithmetic's; if minires' float32 is off from float64
by much more than PyTorch's, minires' rounding is the problem. Needs torch and the data.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import minires as mr


def first_over_last_torch(model, x, y, dtype):
    import torch
    net = mr.export.to_torch(model).to(dtype).train()
    loss = torch.nn.functional.cross_entropy(net(torch.tensor(x, dtype=dtype)),
                                             torch.tensor(y, dtype=torch.long))
    loss.backward()
    norms = [p.grad.norm().item() for p in net.parameters() if p.dim() >= 2]
    return norms[0] / norms[-1]


def first_over_last_minires(model, x, y, dtype):
    m = model.double() if dtype == np.float64 else model
    return mr.inspect.gradient_flow(m, x.astype(dtype), y).summary()["first_over_last"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="plain56,resnet56")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--perturbations", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1e-7)
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(2)
    mr.use_speed_settings()
    data = mr.data.load_cifar10(download=False)
    train = data.train.take(args.batch)
    x, y = next(iter(mr.data.DataLoader(train.images, train.labels, batch_size=args.batch)))
    x64 = x.astype(np.float64)
    rng = np.random.default_rng(1)
    batches = [x64] + [x64 * (1 + args.scale * rng.standard_normal(x.shape))
                       for _ in range(args.perturbations)]
    print(f"first/last on {args.batch} CIFAR-10 training images; row 0 unperturbed, rows 1-"
          f"{args.perturbations} each pixel times 1 + {args.scale:g} z; torch {torch.__version__}")
    for name in args.models.split(","):
        start = time.perf_counter()
        table = {"minires f32": [], "minires f64": [], "torch f32": [], "torch f64": []}
        for xb in batches:
            for label, dtype, run in (("minires f32", np.float32, first_over_last_minires),
                                      ("minires f64", np.float64, first_over_last_minires),
                                      ("torch f32", torch.float32, first_over_last_torch),
                                      ("torch f64", torch.float64, first_over_last_torch)):
                mr.manual_seed(0)
                model = mr.models.get_model(name)
                table[label].append(run(model, xb, y, dtype))
        truth = table["minires f64"][0]
        print(f"\n{name} ({time.perf_counter() - start:.0f} s); unperturbed float64 {truth:.6g}")
        for label, values in table.items():
            v = np.array(values)
            print(f"  {label:<12} unperturbed {v[0]:<10.6g} off float64 by {v[0] / truth - 1:+.2%}"
                  f"   perturbed {v[1:].min():.4g} .. {v[1:].max():.4g} "
                  f"(spread {np.ptp(v[1:]) / truth:.2%})")


if __name__ == "__main__":
    main()
