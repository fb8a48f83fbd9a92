"""The degradation problem and its cure (He et al. 2015, Figure 6), both halves.

Four networks -- plain and residual, shallow and deep (default 20 and 56 layers) -- are
trained with one recipe: the same data, the same order of batches, the same budget and
learning-rate schedule. The paper's two claims are about *training* error:

1. the deeper plain net ends with a higher training error than the shallower one, so
   it is not overfitting: it is harder to optimise (the degradation problem);
2. the deeper residual net ends with a training error no higher than the shallower
   residual net's (residual learning cures it).

Presets (``--preset``):

``laptop`` (the default; about 13 minutes per seed on 2 CPU cores)
    CIFAR-10 average-pooled to 16x16 (4x fewer FLOPs), a fixed class-balanced subset of
    10,240 training images, no augmentation, 800 iterations of batch 128 (10 epochs),
    SGD with Nesterov momentum 0.9, weight decay 5e-4 (not on BN/bias), lr 0.1 with a
    linear warm-up over the first 5% and a cosine decay to zero inside the budget.
    **One departure from the paper:** each residual branch's last BN scale starts at
    zero (``zero_init_residual``, Goyal et al. 2017), so every block starts as its
    shortcut. With the paper's initialisation ResNet-56 still lags ResNet-20 at this
    budget (``--residual-init paper`` shows it), as it does for the first ~10k
    iterations of the paper's own schedule. A short budget also needs the learning
    rate annealed to zero inside it.
``paper``
    He et al.'s setting: 32x32, all 50,000 training images, crop-and-flip augmentation,
    64k iterations of batch 128, lr 0.1 divided by 10 at 32k and 48k, weight decay 1e-4,
    momentum 0.9. Hours per net on a GPU; from the same code.

The training error that decides the verdict is measured at the end, in eval mode, on the
whole training subset. The curves in the figure are the running error on the batches as
they were trained on (the paper's thin curves).

The verdict is computed from the numbers. For each half and each seed, gap = error(deep)
- error(shallow). A half is "shown" when every seed's gap points the claimed way (plain:
gap > 0; residual: gap <= 0), "not shown" when none does, and "inconclusive" when the
seeds disagree or when a net of that half is still near chance (error >= 0.8 with 10
classes), where the comparison says nothing about optimisation.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .common import (
    Timer,
    build,
    depth_list,
    environment,
    evaluate,
    finish,
    load_splits,
    new_figure,
    output_folder,
    save_json,
    save_weights,
    seed_list,
    train,
)

NAME = "degradation"
DESCRIPTION = ("Training error of plain vs residual nets of two depths (He et al. 2015, Fig. 6),\n"
               "same recipe, data, order and budget for all four; prints a measured verdict.")

PRESETS = {
    "laptop": dict(input_size=16, train_images=10240, test_images=2000, steps=800,
                   batch_size=128, lr=0.1, nesterov=True, weight_decay=5e-4, warmup_frac=0.05,
                   milestones=None, augment=False, zero_init_residual=True),
    "paper": dict(input_size=32, train_images=50000, test_images=10000, steps=64000,
                  batch_size=128, lr=0.1, nesterov=False, weight_decay=1e-4, warmup_frac=0.0,
                  milestones=(0.5, 0.75), augment=True, zero_init_residual=False),
    # --tiny: synthetic 8x8 data, depths 8 and 14, a few steps -- checks the pipeline only
    "tiny": dict(input_size=8, train_images=256, test_images=128, steps=16, batch_size=32,
                 lr=0.05, nesterov=True, weight_decay=5e-4, warmup_frac=0.05, milestones=None,
                 augment=False, zero_init_residual=True),
}
FAMILIES = ("plain", "resnet")
# --resume keeps every finished net (or part) and computes the rest, even after the run was
# complete: a resumed degradation run with more --seeds adds the new seeds.
RESUMES_ITSELF = True
CLAIM = {"plain": "deeper trains worse (gap > 0)", "resnet": "deeper trains no worse (gap <= 0)"}


def add_arguments(parser):
    parser.add_argument("--preset", choices=("laptop", "paper"), default="laptop",
                        help="the setting (default: %(default)s; see the description)")
    parser.add_argument("--depths", default=None, help="two comma-separated depths 6n+2, "
                        "shallow then deep (default: 20,56; with --tiny 8,14)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds, run one after "
                        "the other; the verdict needs every seed to agree (default: --seed)")
    parser.add_argument("--steps", type=int, default=None, help="iterations per net "
                        "(default: the preset's)")
    parser.add_argument("--train-images", type=int, default=None, help="size of the fixed "
                        "class-balanced training subset (default: the preset's)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate "
                        "(default: the preset's)")
    parser.add_argument("--residual-init", choices=("paper", "zero"), default=None,
                        help="'zero': each residual branch's last BN scale starts at 0 "
                        "(zero_init_residual, a departure from the paper, labelled in the results); "
                        "'paper': He et al.'s (default: the preset's -- zero for laptop, paper for "
                        "paper)")
    parser.add_argument("--log-every", type=int, default=10, help="record the running training "
                        "error every N iterations (default: %(default)s)")


def setting(args) -> dict:
    """The preset with the command line's overrides, validated."""
    s = dict(PRESETS["tiny" if args.tiny else args.preset])
    for key in ("steps", "train_images", "lr"):
        value = getattr(args, key)
        if value is not None:
            if value <= 0:
                raise ValueError(f"--{key.replace('_', '-')}: must be positive, got {value}")
            s[key] = value
    if args.residual_init is not None:
        s["zero_init_residual"] = args.residual_init == "zero"
    if args.log_every < 1:
        raise ValueError(f"--log-every: must be >= 1, got {args.log_every}")
    s["preset"] = "tiny" if args.tiny else args.preset
    return s


def run(args):
    s = setting(args)
    depths = depth_list(args.depths or ("8,14" if args.tiny else "20,56"))
    if len(depths) != 2 or depths[0] >= depths[1]:
        raise ValueError(f"--depths: give two depths, shallow then deep (like 20,56), got "
                         f"{args.depths}")
    seeds = seed_list(args.seeds, args.seed)
    out_dir = output_folder(args)
    seeds = seeds_with_earlier(out_dir, seeds)
    clock = Timer()
    train_split, test = load_splits(args, limit_train=s["train_images"],
                                    limit_test=s["test_images"], input_size=s["input_size"],
                                    balanced=True)
    s["train_images"] = len(train_split)
    results = {"experiment": NAME, "environment": environment(args), "setting": s,
               "depths": depths, "seeds": seeds, "runs": {}}
    check_same_setting(out_dir, results)
    save_json(out_dir / "results.json", results)
    names = [f"{family}{depth}" for family in FAMILIES for depth in depths]
    print(f"degradation ({s['preset']}): {', '.join(names)} on {len(train_split)} training "
          f"images at {s['input_size']}x{s['input_size']}, {s['steps']} iterations of batch "
          f"{s['batch_size']}, seeds {seeds}"
          + ("; residual branches start at zero (zero_init_residual, not the paper's init)"
             if s["zero_init_residual"] else ""), flush=True)
    for seed in seeds:
        seed_dir = out_dir / f"seed-{seed}"
        seed_dir.mkdir(exist_ok=True)
        runs = results["runs"][str(seed)] = {}
        for name in names:
            runs[name] = train_one(name, seed, s, args, seed_dir, train_split, test)
        # from the nets' own records, so that a resumed seed keeps its real cost
        seconds = sum(r.get("seconds", r["history"].get("seconds", 0.0)) for r in runs.values())
        results.setdefault("seconds_per_seed", {})[str(seed)] = seconds
        print(f"seed {seed}: four nets trained and measured in {seconds / 60:.1f} min", flush=True)
        save_json(out_dir / "results.json", results)       # partial results survive a crash
    results["verdict"] = verdict(results)
    print(format_verdict(results["verdict"]), flush=True)
    return finish(results, out_dir, NAME, plot, clock.seconds)


def seeds_with_earlier(out_dir, seeds):
    """A resumed run keeps the seeds its folder already holds (results are never dropped),
    then adds the new ones."""
    path = out_dir / "results.json"
    if not path.is_file():
        return seeds
    earlier = [int(x) for x in json.loads(path.read_text()).get("seeds", [])]
    return earlier + [x for x in seeds if x not in earlier]


def check_same_setting(out_dir, results):
    """A resumed run must continue the same setting: nets of two settings are never mixed."""
    path = out_dir / "results.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    for key in ("setting", "depths"):
        if json.loads(json.dumps(saved.get(key))) != json.loads(json.dumps(results[key])):
            raise SystemExit(f"degradation: {out_dir} holds a run with another {key} "
                             f"({saved.get(key)}); resume it with the same options, or choose a "
                             f"new --out")


def train_one(name, seed, s, args, seed_dir, train_split, test) -> dict:
    """Train one net (or, when ``seed_dir`` already holds it finished, load its record)."""
    record_path = seed_dir / f"{name}.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        print(f"seed {seed} {name}: already trained ({record_path}); kept", flush=True)
        return record
    family = "plain" if name.startswith("plain") else "resnet"
    kwargs = {"zero_init_residual": True} if family == "resnet" and s["zero_init_residual"] else {}
    clock = Timer()
    model = build(name, seed, args.device, **kwargs)
    hist = train(model, train_split, None, steps=s["steps"], batch_size=s["batch_size"],
                 lr=s["lr"], nesterov=s["nesterov"], weight_decay=s["weight_decay"],
                 warmup_frac=s["warmup_frac"], milestones=s["milestones"], augment=s["augment"],
                 seed=seed, device=args.device, log_every=2 if args.tiny else args.log_every,
                 eval_every_epoch=False, label=f"seed {seed} {name}")
    train_loss, train_acc = evaluate(model, train_split, device=args.device)
    test_loss, test_acc = evaluate(model, test, device=args.device)
    train_error, test_error = 1.0 - train_acc, 1.0 - test_acc
    record = {"family": family, "depth": int(name.lstrip("plainresnet")), "seed": seed,
              "history": hist, "final_train_error": train_error, "final_train_loss": train_loss,
              "final_test_error": test_error, "final_test_loss": test_loss,
              "parameters": model.num_parameters(), "seconds": clock.seconds}
    meta = {"experiment": NAME, "model": name, "seed": seed,
            "data": {"input_size": s["input_size"], "train_images": s["train_images"],
                     "balanced": True},
            "zero_init_residual": bool(kwargs)}
    save_weights(model, seed_dir / f"{name}.npz", meta=meta)
    save_json(record_path, record)          # last: its presence means "this net is finished"
    print(f"seed {seed} {name}: training error {train_error:.4f} (eval mode, all "
          f"{len(train_split)} training images), test error {test_error:.3f}   "
          f"{hist.get('seconds', 0):.0f}s", flush=True)
    return record


# --- the verdict -------------------------------------------------------------------------------
def near_chance_level(classes=10):
    """An error at or above this is 'still near chance' (chance is 1 - 1/classes)."""
    return 1 - 1 / classes - 0.1


def verdict(results, classes=10) -> dict:
    """Per family: the gaps error(deep) - error(shallow) per seed, their mean and spread, and
    'shown' / 'not shown' / 'inconclusive (...)' for the paper's claim about that family."""
    shallow, deep = sorted(results["depths"])
    out = {}
    for family in FAMILIES:
        gaps, stuck = [], []
        for seed, runs in results["runs"].items():
            a, b = runs.get(f"{family}{shallow}"), runs.get(f"{family}{deep}")
            if a is None or b is None:
                continue
            gaps.append(b["final_train_error"] - a["final_train_error"])
            stuck += [f"{family}{r['depth']} (seed {seed}: {r['final_train_error']:.3f})"
                      for r in (a, b) if r["final_train_error"] >= near_chance_level(classes)]
        if not gaps:
            continue
        holds = [g > 0 if family == "plain" else g <= 0 for g in gaps]
        if stuck:
            word = "inconclusive (a net is still near chance: " + ", ".join(stuck) + ")"
        elif all(holds):
            word = "shown"
        elif not any(holds):
            word = "not shown"
        else:
            word = f"inconclusive (the seeds disagree: {sum(holds)} of {len(holds)} agree)"
        out[family] = {"claim": CLAIM[family], "shallow": shallow, "deep": deep, "gaps": gaps,
                       "mean_gap": float(np.mean(gaps)),
                       "std_gap": float(np.std(gaps, ddof=1)) if len(gaps) > 1 else None,
                       "min_gap": float(min(gaps)), "max_gap": float(max(gaps)),
                       "seeds": len(gaps), "verdict": word}
    return out


def format_verdict(v) -> str:
    lines = []
    for family, r in v.items():
        spread = (f" +- {r['std_gap']:.4f} (std over {r['seeds']} seeds; range "
                  f"{r['min_gap']:+.4f} .. {r['max_gap']:+.4f})" if r["std_gap"] is not None
                  else " (1 seed: no spread; use --seeds for several)")
        lines.append(f"{'plain nets' if family == 'plain' else 'residual nets'}: training error "
                     f"gap {family}{r['deep']} - {family}{r['shallow']} = {r['mean_gap']:+.4f}"
                     f"{spread}; claim '{r['claim']}': {r['verdict'].upper()}")
    return "\n".join(lines)


# --- the figure --------------------------------------------------------------------------------
def plot(results):
    fig = new_figure((11, 4))
    axes = dict(zip(FAMILIES, fig.subplots(1, 2, sharey=True)))
    depths = sorted(results["depths"])
    for family, ax in axes.items():
        for i, depth in enumerate(depths):
            name, color = f"{family}{depth}", f"C{i}"
            curves = [runs[name]["history"] for runs in results["runs"].values() if name in runs]
            for hist in curves:
                ax.plot(hist["steps"], hist["train_error"], color=color, lw=0.6, alpha=0.5)
            finals = [runs[name]["final_train_error"] for runs in results["runs"].values()
                      if name in runs]
            if finals:
                ax.plot([curves[0]["steps_total"]] * len(finals), finals, "o", color=color,
                        ms=5, label=f"{name}: {np.mean(finals):.3f} at the end (eval mode)")
        v = results.get("verdict", {}).get(family)
        title = "plain networks" if family == "plain" else "residual networks"
        if v:
            title += f": {v['verdict'].split(' (')[0]}"
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.axhline(0.9, color="gray", ls=":", lw=1)
        ax.legend(fontsize=7)
        ax.set_ylim(0, 1)
    s = results["setting"]
    axes["plain"].set_ylabel("training error (running, per batch)")
    fig.suptitle(f"{s['train_images']} CIFAR-10 images at {s['input_size']}x{s['input_size']}, "
                 f"{s['steps']} iterations, {len(results['runs'])} seed(s)"
                 + ("; zero-init residual (not the paper's)" if s["zero_init_residual"] else ""),
                 fontsize=9)
    return fig


def weights_of(folder, name):
    """The path of ``name``'s weights in a degradation folder (the first seed's), or None."""
    folder = Path(folder)
    for path in [folder / f"{name}.npz", *sorted(folder.glob(f"seed-*/{name}.npz"))]:
        if path.is_file():
            return path
    return None
