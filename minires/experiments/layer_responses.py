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

The same is measured on each net *at initialisation* (the same seed and init), with BN's
running statistics calibrated on 256 training images first: an untrained net's running
statistics are mean 0 and variance 1, so uncalibrated BN would not normalise. That
matters, because the ordering can be there before any training: a residual branch whose
last BN scale starts at 0 responds with exactly 0. Only what *training changes* -- the
ordering of the trained nets where the initial nets do not have it -- is the paper's
learned effect; ``orderings`` records both.
"""
from __future__ import annotations

import numpy as np

from minires.nn import BatchNorm2d

from ..files import new_figure
from .data import first_batch, load_splits
from .nets import describe_net, initial_net, observe
from .options import add_training_arguments, model_names
from .results import Timer, environment, finish, output_folder
from .training import trained_model
from .weights import input_size_of, nets_from

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
    loaded = nets_from(args.from_dir, names, args.device) if args.from_dir else {}
    out_dir = output_folder(args)
    clock = Timer()
    size = input_size_of(loaded)
    train_split, test = load_splits(
        args, limit_train=None if args.tiny else (256 if loaded else args.limit_train),
        limit_test=None if args.tiny else max(n_images, 0 if loaded else args.limit_test),
        input_size=size)
    x, _ = first_batch(test, min(n_images, len(test)))
    calibration, _ = first_batch(train_split, min(256, len(train_split)))
    results = {"experiment": NAME, "environment": environment(args), "images": len(x),
               "calibration_images": len(calibration), "models": {}}
    for name in names:
        seed = loaded[name][1].get("seed", args.seed) if name in loaded else args.seed
        init_stds = response_stds(initial_net(loaded[name][1]["net"] if name in loaded else name,
                                              seed, calibration, args.device), x, args.device)
        if name in loaded:
            model, hist, weights = loaded[name][0], None, f"checkpoint {loaded[name][2]}"
        else:
            model, hist, weights = trained_model(name, args, out_dir, train_split, test)
        stds = response_stds(model, x, args.device)
        results["models"][name] = {"weights": weights, "layers": list(stds),
                                   "std": list(stds.values()), "init_std": list(init_stds.values()),
                                   "mean_std": float(np.mean(list(stds.values()))),
                                   "init_mean_std": float(np.mean(list(init_stds.values()))),
                                   "final_test_error": hist["test_error"][-1]
                                   if hist and hist["test_error"] else None}
        print(f"{name} ({weights}): {len(stds)} layers, response std mean "
              f"{np.mean(list(stds.values())):.3f} trained, "
              f"{np.mean(list(init_stds.values())):.3f} "
              f"at initialisation (BN calibrated)   {clock.seconds:.0f}s", flush=True)
    results["orderings"] = orderings(results["models"])
    for o in results["orderings"]:
        print(f"{o['claim']}: at initialisation {o['at_init']}, trained {o['trained']} -> "
              f"{o['reading']}", flush=True)
    return finish(results, out_dir, NAME, plot, clock.seconds)


MARGIN = 0.05      # "responds more weakly": a mean std lower by more than 5%


def orderings(models) -> list:
    """The paper's two orderings of mean response std, checked at initialisation and after
    training: residual below plain at each depth, and the deeper residual net below the
    shallower, each by more than ``MARGIN`` (one seed, one batch: smaller differences are
    not read as an ordering). Each is 'learned' only when the trained nets have it and the
    initial ones do not; 'present at initialisation' when both have it (then it is not
    evidence of what training does)."""
    def depth(n):
        return describe_net(n)[1]

    def family(n):
        return describe_net(n)[0]

    checks = []
    for n in models:                    # each residual net against the plain net of its depth
        plain = f"plain{depth(n)}"
        if family(n) == "resnet" and plain in models:
            checks.append((n, plain, f"{n} responds more weakly than {plain}"))
    resnets = sorted((n for n in models if family(n) == "resnet"), key=depth)
    for a in resnets:                   # the deeper residual net against the shallower, one init
        for b in resnets:
            if depth(a) < depth(b) and a.partition("-")[2] == b.partition("-")[2]:
                checks.append((b, a, f"{b} responds more weakly than {a}"))
    out = []
    for low, high, claim in checks:
        at_init = models[low]["init_mean_std"] < (1 - MARGIN) * models[high]["init_mean_std"]
        trained = models[low]["mean_std"] < (1 - MARGIN) * models[high]["mean_std"]
        reading = ("learned (absent at initialisation, present after training)"
                   if trained and not at_init else
                   "present at initialisation already: not evidence of learning" if at_init and
                   trained else "lost in training" if at_init else "not shown")
        out.append({"claim": claim, "at_init": at_init, "trained": trained, "reading": reading,
                    "init": [models[low]["init_mean_std"], models[high]["init_mean_std"]],
                    "after": [models[low]["mean_std"], models[high]["mean_std"]]})
    return out


def plot(results):
    fig = new_figure((10, 6.5))
    ax1, ax2 = fig.subplots(2, 1)
    for i, (name, r) in enumerate(results["models"].items()):
        style = "--" if name.startswith("plain") else "-"
        ax1.plot(range(1, len(r["std"]) + 1), r["std"], style, color=f"C{i}", lw=1, label=name)
        if r.get("init_std"):
            ax1.plot(range(1, len(r["init_std"]) + 1), r["init_std"], ":", color=f"C{i}", lw=0.8,
                     label=f"{name} at init (BN calibrated)")
        ax2.plot(range(1, len(r["std"]) + 1), sorted(r["std"], reverse=True), style, color=f"C{i}",
                 lw=1, label=name)
    ax1.set_xlabel("layer index (original order)")
    ax2.set_xlabel("layer index (sorted by magnitude)")
    for ax in (ax1, ax2):
        ax.set_ylabel("std of response")
        ax.legend(fontsize=7)
    ax1.set_title(f"layer responses on {results['images']} test images (He et al. Fig. 7)")
    return fig
