"""The degradation problem (He et al. 2015, Figure 6): deeper plain nets train worse, residual nets don't.

Plain and residual CIFAR networks of two depths (default 20 and 56) are trained with
the same recipe and budget (SGD with momentum, warm-up then cosine decay, the same
data in the same order). The training error is recorded as training goes (the error
on the batches just trained on, averaged over ``--log-every`` iterations, like the
paper's thin curves) and the test error after each epoch.

The paper's claim: the 56-layer plain network has *higher training error* than the
20-layer one (so it is not overfitting -- it is harder to optimise), and the 56-layer
residual network does not. The small default budget trains far less than the paper
(64k iterations on 45k images); with so little training every model is still
under-fitted, and the gap can differ from the paper's. The results say what was
measured with which budget; scale up with ``--epochs`` and ``--limit-train``.
"""
from __future__ import annotations

from .common import (
    Timer,
    add_training_arguments,
    depth_list,
    environment,
    evaluate,
    finish,
    load_splits,
    new_figure,
    output_folder,
    save_json,
    trained_model,
)

NAME = "degradation"
DESCRIPTION = ("Training error of plain vs residual nets of two depths (He et al. 2015, Fig. 6).\n"
               "Every model gets the same recipe, data and budget.")


def add_arguments(parser):
    parser.add_argument("--depths", default=None, help="comma-separated depths 6n+2 "
                        "(default: 20,56; with --tiny 8,14)")
    add_training_arguments(parser, epochs=2, limit_train=4000, limit_test=1000)


def run(args):
    out_dir = output_folder(args.out)
    clock = Timer()
    depths = depth_list(args.depths or ("8,14" if args.tiny else "20,56"))
    train_split, test = load_splits(args, limit_train=None if args.tiny else args.limit_train,
                                    limit_test=None if args.tiny else args.limit_test)
    train_eval = train_split.take(min(len(train_split), len(test)))
    results = {"experiment": NAME, "environment": environment(args), "depths": depths,
               "train_images": len(train_split), "test_images": len(test), "models": {}}
    for family in ("plain", "resnet"):
        for depth in depths:
            name = f"{family}{depth}"
            model, hist, weights = trained_model(name, args, out_dir, train_split, test)
            # the final training error without augmentation, in eval mode, on a fixed subset
            final_train, _ = evaluate(model, train_eval, device=args.device)
            final_test = hist["test_error"][-1] if hist and hist["test_error"] else \
                evaluate(model, test, device=args.device)[0]
            results["models"][name] = {"family": family, "depth": depth, "weights": weights,
                                       "history": hist, "final_train_error": final_train,
                                       "final_test_error": final_test,
                                       "parameters": model.num_parameters()}
            print(f"{name}: final training error {final_train:.3f} (first {len(train_eval)} "
                  f"training images, eval mode), test error {final_test:.3f}   "
                  f"{clock.seconds:.0f}s", flush=True)
            save_json(out_dir / "results.json", results)     # partial results survive a crash
    results["verdict"] = verdict(results)
    print(results["verdict"])
    return finish(results, out_dir, NAME, plot, clock.seconds)


def verdict(results):
    """One sentence per family: does the deeper network reach a lower or higher training error?"""
    lines = []
    for family in ("plain", "resnet"):
        rows = sorted((r["depth"], r["final_train_error"]) for r in results["models"].values()
                      if r["family"] == family)
        if len(rows) < 2:
            continue
        (d0, e0), (d1, e1) = rows[0], rows[-1]
        relation = "a higher" if e1 > e0 else ("a lower" if e1 < e0 else "the same")
        lines.append(f"{family}: depth {d1} ends with {relation} training error "
                     f"{'as' if e1 == e0 else 'than'} depth {d0} ({e1:.3f} vs {e0:.3f}).")
    return " ".join(lines)


def plot(results):
    fig = new_figure((11, 4))
    if fig is None:
        return None
    axes = dict(zip(("plain", "resnet"), fig.subplots(1, 2, sharey=True)))
    for i, (name, r) in enumerate(sorted(results["models"].items(), key=lambda kv: kv[1]["depth"])):
        ax, hist = axes[r["family"]], r["history"]
        if not hist:
            continue
        color = f"C{sorted(results['depths']).index(r['depth'])}"
        ax.plot(hist["steps"], hist["train_error"], color=color, lw=0.8, label=f"{name} train")
        if hist["test_error"]:
            ax.plot(hist["epoch_steps"], hist["test_error"], "o-", color=color, lw=2, ms=4,
                    label=f"{name} test")
    for family, ax in axes.items():
        ax.set_xlabel("iteration")
        ax.set_title(f"{family} networks ({results['train_images']} training images)")
        ax.legend(fontsize=7)
        ax.set_ylim(0, 1)
    axes["plain"].set_ylabel("error")
    return fig
