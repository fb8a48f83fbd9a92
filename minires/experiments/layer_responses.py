"""Standard deviation of layer responses (He et al. 2015, Figure 7).

The response of a layer is the output of each 3x3 convolution after its batch norm
and before any nonlinearity or addition -- in minires' CIFAR networks the outputs of
the stem's ``bn1`` and of each block's ``bn1`` and ``bn2``. Its standard deviation
(over all units and the test images, in eval mode) is measured with forward hooks,
in forward order and sorted by magnitude. The paper's observation: residual networks
have generally smaller responses than their plain counterparts, and deeper residual
networks smaller ones than shallower ResNets -- the residual functions stay close to
zero, so each block modifies the signal less.

The networks are trained with the recipe of the degradation experiment, or loaded
from its output with ``--from`` (its nets then see images of the size they were
trained on).
"""
from __future__ import annotations

import numpy as np

from minires.nn import BatchNorm2d

from .common import (
    Timer,
    add_training_arguments,
    environment,
    finish,
    first_batch,
    input_size_of,
    load_splits,
    model_names,
    net_from,
    observe,
    new_figure,
    output_folder,
    trained_model,
)

NAME = "layer-responses"
DESCRIPTION = ("Std of each 3x3 layer's response in trained nets (He et al. 2015, Fig. 7).\n"
               "Responses are taken after BN, before the ReLU or the addition.")


def add_arguments(parser):
    parser.add_argument("--models", default=None, help="comma-separated model names (default: "
                        "plain20,plain56,resnet20,resnet56; with --tiny "
                        "plain8,plain14,resnet8,resnet14)")
    parser.add_argument("--from", dest="from_dir", default=None, help="load NAME.npz weights "
                        "from this folder (e.g. runs/experiments/degradation) instead of training")
    parser.add_argument("--images", type=int, default=500, help="test images the responses are "
                        "measured on (default: %(default)s)")
    add_training_arguments(parser, epochs=2, limit_train=4000, limit_test=1000)


def response_layers(model):
    """(name, BN module) of the 3x3 layers' batch norms: every BatchNorm2d not in a shortcut."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, BatchNorm2d) and "downsample" not in name.split(".")]


def response_stds(model, x, device="cpu"):
    """name -> std of that layer's response on ``x`` (eval mode, forward hooks)."""
    stds = {}

    def hook(module, inputs, output, name):
        stds[name] = float(output.data.std(dtype=np.float64))

    observe(model, x, [(bn, lambda m, i, o, name=name: hook(m, i, o, name))
                       for name, bn in response_layers(model)], device)
    return stds


def run(args):
    names = model_names(args.models, "plain8,plain14,resnet8,resnet14" if args.tiny
                        else "plain20,plain56,resnet20,resnet56")
    n_images = min(args.images, 64) if args.tiny else args.images
    loaded = {n: net_from(args.from_dir, n, args.device) for n in names} if args.from_dir else {}
    out_dir = output_folder(args)
    clock = Timer()
    size = input_size_of(loaded)
    train_split, test = load_splits(
        args, limit_train=None if args.tiny else (8 if loaded else args.limit_train),
        limit_test=None if args.tiny else max(n_images, 0 if loaded else args.limit_test),
        input_size=size)
    x, _ = first_batch(test, min(n_images, len(test)))
    results = {"experiment": NAME, "environment": environment(args), "images": len(x), "models": {}}
    for name in names:
        if name in loaded:
            model, hist, weights = loaded[name][0], None, f"checkpoint {loaded[name][2]}"
        else:
            model, hist, weights = trained_model(name, args, out_dir, train_split, test)
        stds = response_stds(model, x, args.device)
        results["models"][name] = {"weights": weights, "layers": list(stds),
                                   "std": list(stds.values()),
                                   "final_test_error": hist["test_error"][-1]
                                   if hist and hist["test_error"] else None}
        print(f"{name} ({weights}): {len(stds)} layers, response std mean "
              f"{np.mean(list(stds.values())):.3f}   {clock.seconds:.0f}s", flush=True)
    return finish(results, out_dir, NAME, plot, clock.seconds)


def plot(results):
    fig = new_figure((10, 6.5))
    ax1, ax2 = fig.subplots(2, 1)
    for i, (name, r) in enumerate(results["models"].items()):
        style = "--" if name.startswith("plain") else "-"
        ax1.plot(range(1, len(r["std"]) + 1), r["std"], style, color=f"C{i}", lw=1, label=name)
        ax2.plot(range(1, len(r["std"]) + 1), sorted(r["std"], reverse=True), style, color=f"C{i}",
                 lw=1, label=name)
    ax1.set_xlabel("layer index (original order)")
    ax2.set_xlabel("layer index (sorted by magnitude)")
    for ax in (ax1, ax2):
        ax.set_ylabel("std of response")
        ax.legend(fontsize=7)
    ax1.set_title(f"layer responses on {results['images']} test images (He et al. Fig. 7)")
    return fig
