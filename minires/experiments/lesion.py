"""Lesion study (Veit et al. 2016): delete one piece of a trained network, measure the test error.

For a trained residual network, each residual block in turn is deleted: its branch is
dropped and the block computes only its shortcut, ``relu(shortcut(x))``. For the plain
network of the same depth, each single layer (a 3x3 convolution and its batch norm)
whose input and output have the same shape is replaced by the identity in turn (the
ReLU after it then passes its non-negative input unchanged). Veit et al. found that
residual networks degrade smoothly -- deleting one block barely changes the error --
while plain networks collapse to chance when any layer is removed, which they read as
"residual networks behave like ensembles of many shallower paths".

Deletion uses forward hooks only (``register_forward_hook`` returning a replacement
output); the weights are never modified.
"""
from __future__ import annotations

from ..files import new_figure
from ..inspect import residual_blocks
from ..train import evaluate
from .data import load_splits
from .nets import build
from .options import add_training_arguments
from .results import Timer, environment, finish, output_folder
from .training import train_net
from .weights import input_size_of, net_from, nets_from, save_weights

NAME = "lesion"
DESCRIPTION = ("Delete one block (or layer) of a trained net, measure the test error (Veit 2016).\n"
               "Single residual blocks of a residual net, single layers of a plain net.")


def add_arguments(parser):
    parser.add_argument("--depth", type=int, default=None, help="depth of resnetD and plainD "
                        "(default: 20; with --tiny 8)")
    add_training_arguments(parser, epochs=3, limit_train=10000, limit_test=1000)  # when no weights
    parser.add_argument("--resnet-checkpoint", default=None, help="trained weights of resnetD")
    parser.add_argument("--plain-checkpoint", default=None, help="trained weights of plainD")
    parser.add_argument("--from", dest="from_dir", default=None, help="a folder holding "
                        "resnetD.npz / plainD.npz (e.g. the output of the degradation experiment)")


# --- lesions, as forward hooks --------------------------------------------------------------------
def _shortcut_only(block, inputs, output):
    """Forward hook: the block's output becomes what its shortcut alone would give."""
    out = block.downsample(inputs[0])
    return block.relu(out) if block.post_activation else out


def _identity(module, inputs, output):
    """Forward hook: the layer passes its input through unchanged."""
    return inputs[0]


def residual_lesions(model):
    """(label, [(module, hook)]) for deleting each residual block."""
    return [(name, [(block, _shortcut_only)]) for name, block in residual_blocks(model)
            if block.shortcut]


def plain_lesions(model):
    """(label, [(module, hook)]) for deleting each shape-preserving conv+BN layer of the blocks."""
    lesions = []
    for name, block in residual_blocks(model):
        for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
            c = getattr(block, conv, None)
            if c is None or getattr(block, bn, None) is None:
                continue
            if c.in_channels == c.out_channels and tuple(c.stride) == (1, 1):
                lesions.append((f"{name}.{conv}",
                                [(c, _identity), (getattr(block, bn), _identity)]))
    return lesions


def lesion_errors(model, lesions, test, device):
    """Test error with each lesion applied alone."""
    rows = []
    for label, hooks in lesions:
        handles = [m.register_forward_hook(h) for m, h in hooks]
        try:
            loss, acc = evaluate(model, test, device=device)
            err = 1.0 - acc
        finally:
            for handle in handles:
                handle.remove()
        rows.append({"removed": label, "test_error": err, "test_loss": loss})
        print(f"  without {label:<18} test error {err:.3f}", flush=True)
    return rows


def _loaded_nets(args, names):
    """{name: (model, meta, path)} for the nets given by --from / --*-checkpoint."""
    if args.from_dir and not (args.resnet_checkpoint or args.plain_checkpoint):
        return nets_from(args.from_dir, names, args.device)         # both from one seed
    loaded = {}
    for name in names:
        explicit = args.resnet_checkpoint if name.startswith("resnet") else args.plain_checkpoint
        source = explicit or args.from_dir
        if source:
            loaded[name] = net_from(source, name, args.device)
    return loaded


def run(args):
    depth = args.depth or (8 if args.tiny else 20)
    epochs = 1 if args.tiny else args.epochs
    names = [f"{family}{depth}" for family in ("resnet", "plain")]
    loaded = _loaded_nets(args, names)
    out_dir = output_folder(args)
    clock = Timer()
    train_split, test = load_splits(args, limit_train=None if args.tiny else args.limit_train,
                                    limit_test=None if args.tiny else args.limit_test,
                                    input_size=input_size_of(loaded))
    results = {"experiment": NAME, "environment": environment(args), "depth": depth,
               "test_images": len(test), "models": {}}
    for name in names:
        family = "resnet" if name.startswith("resnet") else "plain"
        if name in loaded:
            model, weights = loaded[name][0], f"checkpoint {loaded[name][2]}"
        else:
            model = build(name, args.seed, args.device)
            train_net(model, train_split, None, epochs=epochs,
                      batch_size=min(args.batch_size, 32) if args.tiny else args.batch_size,
                      lr=args.lr, seed=args.seed, device=args.device, log_every=args.log_every,
                      eval_every_epoch=False, label=name)
            save_weights(model, out_dir / f"{name}.npz",
                         meta={"model": name, "seed": args.seed, "epochs": epochs,
                               "data": {"input_size": int(train_split.images.shape[-1])}})
            weights = f"trained here: {epochs} epochs on {len(train_split)} images"
        base_loss, base_acc = evaluate(model, test, device=args.device)
        base = 1.0 - base_acc
        print(f"{name} ({weights}): test error {base:.3f}", flush=True)
        lesions = residual_lesions(model) if family == "resnet" else plain_lesions(model)
        rows = lesion_errors(model, lesions, test, args.device)
        results["models"][name] = {"weights": weights, "test_error": base, "test_loss": base_loss,
                                   "unit": "block" if family == "resnet" else "layer",
                                   "lesions": rows,
                                   "mean_error_after_lesion": (sum(r["test_error"] for r in rows)
                                                               / len(rows)) if rows else None}
    return finish(results, out_dir, NAME, plot, clock.seconds)


def plot(results):
    fig = new_figure((11, 4))
    axes = fig.subplots(1, len(results["models"]), squeeze=False)[0]
    for ax, (name, r) in zip(axes, results["models"].items()):
        labels = [row["removed"] for row in r["lesions"]]
        errors = [row["test_error"] for row in r["lesions"]]
        ax.bar(range(len(errors)), errors, color="C0" if name.startswith("resnet") else "C3")
        ax.axhline(r["test_error"], color="k", lw=1, label=f"intact: {r['test_error']:.3f}")
        ax.axhline(0.9, color="gray", ls=":", lw=1, label="chance (0.9)")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=6)
        ax.set_ylim(0, 1)
        ax.set_ylabel("test error")
        ax.set_title(f"{name}: delete one {r['unit']}")
        ax.legend(fontsize=7)
    return fig
