"""The degradation problem and its cure (He et al. 2015, Figure 6), and what cures it.

Plain and residual networks, shallow and deep (default 20 and 56 layers), are trained with
one recipe: the same data, the same order of batches, the same budget and learning-rate
schedule. The paper's two claims are about *training* error:

1. the deeper plain net ends with a higher training error than the shallower one, so
   it is not overfitting: it is harder to optimise (the degradation problem);
2. the deeper residual net ends with a *lower* training error than the shallower one
   (He et al.: "the 34-layer ResNet is better than the 18-layer ResNet"; in Fig. 6 the
   deeper residual nets train better): residual learning lets depth pay.

Every net starts from He et al.'s initialisation (Kaiming-normal convolutions, BN scale
1, parameter-free option-A shortcuts). ``--ablation`` adds two departures as labelled
nets of their own, trained on the same data and budget: plain nets whose block
convolutions start as the identity (``plain56-dirac``), and residual nets whose branches
start at zero (``resnet56-zero``). It asks whether the cure is the architecture (the
shortcut) or the initialisation (starting near the identity).

Presets (``--preset``):

``laptop`` (the default; 51-56 CPU-minutes per seed for the four nets, measured on 2 cores)
    All 50,000 CIFAR-10 training images average-pooled to 8x8 (16x fewer FLOPs than
    32x32), random crop (1-pixel padding, the paper's 4 pixels scaled to 8x8) and flip,
    4,000 iterations of batch 128 (about 10 epochs), SGD with Nesterov momentum 0.9,
    weight decay 5e-4 (not on BN/bias), lr 0.1 with a linear warm-up over the first 5% and a
    cosine decay to zero inside the budget. On the full augmented set the training error
    stays well above zero, so depth can pay instead of both residual nets memorising a
    subset (how the setting was chosen: docs/results/degradation-pilots.md).
``paper``
    He et al.'s setting: 32x32, all 50,000 training images, crop-and-flip augmentation,
    64k iterations of batch 128, lr 0.1 divided by 10 at 32k and 48k, weight decay 1e-4 on
    every parameter, momentum 0.9. Hours per net on a GPU; from the same code.

The training error that decides the verdict is measured at the end, in eval mode, on the
whole (un-augmented) training set. The curves in the figure are the running error on the
batches as they were trained on (the paper's thin curves).

The verdict is computed from the numbers, per comparison (``paired_comparison``): over
seeds, gap = error(B) - error(A). A direction ("B higher" / "B lower") is *shown* only
when every seed's gap points that way, the mean gap exceeds ``MIN_GAP`` (0.01: 500 of
50,000 images) and exceeds twice its standard error over seeds. Two nets that both end
below ``FLOOR`` (0.01) have both fit the training set: the comparison is inconclusive,
since it says nothing about optimisation; so is one where *both* nets are still near
chance (neither has learned anything yet), and one with a single seed (no spread to compare
the gap with). A deep net that stays near chance while the shallow one learns is the
degradation problem at its most extreme, and counts as a gap like any other. (Until
2026-12-05 one net near chance made the comparison inconclusive; that rule was changed
while the fresh seeds were training, after plain56's running error on seed 30 was seen
near chance -- the README reports what either rule says.)
"""
from __future__ import annotations

import json
import math

import numpy as np

from ..files import new_figure
from ..train import evaluate
from .data import load_splits
from .nets import INITS, build, describe_net, net_name, split_net_name
from .options import ExperimentError, depth_list, seed_list
from .results import Timer, environment, finish, output_folder, save_results
from .training import train_net
from .weights import save_weights

NAME = "degradation"
DESCRIPTION = ("Training error of plain vs residual nets of two depths under He et al.'s init "
               "(He et al. 2015, Fig. 6), same recipe, data, order and budget for all; with "
               "--ablation also Dirac-initialised plain and zero-initialised residual nets; prints "
               "a verdict with effect sizes over seeds.")

PRESETS = {
    "laptop": dict(input_size=8, train_images=50000, test_images=10000, steps=4000,
                   batch_size=128, lr=0.1, nesterov=True, weight_decay=5e-4, decay_bn_bias=False,
                   warmup_frac=0.05, milestones=None, augment=True),
    "paper": dict(input_size=32, train_images=50000, test_images=10000, steps=64000,
                  batch_size=128, lr=0.1, nesterov=False, weight_decay=1e-4, decay_bn_bias=True,
                  warmup_frac=0.0, milestones=(0.5, 0.75), augment=True),
    # --tiny: synthetic 8x8 data, depths 8 and 14, a few steps -- checks the pipeline only
    "tiny": dict(input_size=8, train_images=256, test_images=128, steps=16, batch_size=32,
                 lr=0.05, nesterov=True, weight_decay=5e-4, decay_bn_bias=False, warmup_frac=0.05,
                 milestones=None, augment=False),
}
# a variant is a family of nets (one per depth) with one initialisation:
# VARIANTS[v] = (family, init)
VARIANTS = {"plain": ("plain", "paper"), "plain-dirac": ("plain", "dirac"),
            "resnet": ("resnet", "paper"), "resnet-zero": ("resnet", "zero")}
HEADLINE = ("plain", "resnet")
ABLATION = ("plain", "plain-dirac", "resnet", "resnet-zero")
# --resume keeps every finished net (or part) and computes the rest, even after the run was
# complete: a resumed degradation run with more --seeds (or --ablation) adds what is new.
HANDLES_RESUME = True
# the paper's claim per headline variant: which direction of error(deep) - error(shallow)
CLAIM = {"plain": ("higher", "deeper trains worse (gap > 0)"),
         "resnet": ("lower", "deeper trains better (gap < 0)")}
MIN_GAP = 0.01      # the smallest mean gap in training error a verdict counts
FLOOR = 0.01        # both nets below this training error: both fit the training set


def add_arguments(parser):
    parser.add_argument("--preset", choices=("laptop", "paper"), default="laptop",
                        help="the setting (default: %(default)s; see the description)")
    parser.add_argument("--depths", default=None, help="two comma-separated depths 6n+2, "
                        "shallow then deep (default: 20,56; with --tiny 8,14)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds, run one after "
                        "the other (default: 30,31,32; with --tiny --seed); a verdict needs at "
                        "least two")
    parser.add_argument("--steps", type=int, default=None, help="iterations per net "
                        "(default: the preset's)")
    parser.add_argument("--train-images", type=int, default=None, help="size of the fixed "
                        "class-balanced training subset (default: the preset's)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate "
                        "(default: the preset's)")
    parser.add_argument("--input-size", type=int, choices=(8, 16, 32), default=None,
                        help="average-pool the images to this size (default: the preset's)")
    parser.add_argument("--augment", choices=("on", "off"), default=None,
                        help="random crop (padding input-size/8) and flip (default: the preset's)")
    parser.add_argument("--ablation", action="store_true", help="also train the two departures "
                        "from He et al.'s init, as nets of their own: plain nets starting as the "
                        "identity (Dirac) and residual nets with zero-initialised branches")
    parser.add_argument("--variants", default=None, help="which variants to train, comma-"
                        f"separated from {', '.join(VARIANTS)} (default: plain,resnet; all four "
                        "with --ablation)")
    parser.add_argument("--log-every", type=int, default=10, help="record the running training "
                        "error every N iterations (default: %(default)s)")


def setting(args) -> dict:
    """The preset with the command line's overrides, validated."""
    s = dict(PRESETS["tiny" if args.tiny else args.preset])
    if args.input_size is not None:
        s["input_size"] = args.input_size
    if args.augment is not None:
        s["augment"] = args.augment == "on"
    for key in ("steps", "train_images", "lr"):
        value = getattr(args, key)
        if value is not None:
            if not value > 0 or not math.isfinite(value):
                raise ValueError(f"--{key.replace('_', '-')}: must be positive, got {value}")
            s[key] = value
    if args.log_every < 1:
        raise ValueError(f"--log-every: must be >= 1, got {args.log_every}")
    s["crop_padding"] = s["input_size"] // 8
    s["preset"] = "tiny" if args.tiny else args.preset
    return s


def variant_list(args):
    if args.variants is None:
        return list(ABLATION if args.ablation else HEADLINE)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if not variants or bad:
        raise ValueError(f"--variants: expected a comma-separated subset of "
                         f"{', '.join(VARIANTS)}, got {args.variants!r}")
    return variants


def variant_net(variant, depth):
    """('resnet-zero', 56) -> 'resnet56-zero': the net of a variant at a depth."""
    family, init = VARIANTS[variant]
    return net_name(f"{family}{depth}", init)


def variant_of(name):
    """'resnet56-zero' -> 'resnet-zero'; 'plain20' -> 'plain'."""
    family, _, init = describe_net(name)
    return next(v for v, fi in VARIANTS.items() if fi == (family, init))


# fixed before they ran; pilots used 0-4 and 20-25, the zero-init study 10-12
DEFAULT_SEEDS = "30,31,32"


def run(args):
    s = setting(args)
    depths = depth_list(args.depths or ("8,14" if args.tiny else "20,56"))
    if len(depths) != 2 or depths[0] >= depths[1]:
        raise ValueError(f"--depths: give two depths, shallow then deep (like 20,56), got "
                         f"{args.depths}")
    seeds = seed_list(args.seeds if args.seeds or args.tiny else DEFAULT_SEEDS, args.seed)
    variants = variant_list(args)
    out_dir = output_folder(args)
    seeds, variants, env = with_earlier(out_dir, seeds, variants, environment(args))
    clock = Timer()
    train_split, test = load_splits(args, limit_train=s["train_images"],
                                    limit_test=s["test_images"], input_size=s["input_size"],
                                    balanced=True)
    s["train_images"] = len(train_split)
    results = {"experiment": NAME, "environment": env, "setting": s, "depths": depths,
               "seeds": seeds, "variants": variants, "runs": {}}
    check_same_setting(out_dir, results)
    save_results(out_dir / "results.json", results)
    names = [variant_net(v, d) for v in variants for d in depths]
    print(f"degradation ({s['preset']}): {', '.join(names)} on {len(train_split)} training "
          f"images at {s['input_size']}x{s['input_size']}"
          f"{' with crop and flip' if s['augment'] else ''}, {s['steps']} iterations of batch "
          f"{s['batch_size']}, seeds {seeds}", flush=True)
    for seed in seeds:
        seed_dir = out_dir / f"seed-{seed}"
        seed_dir.mkdir(exist_ok=True)
        runs = results["runs"][str(seed)] = {}
        for name in names:
            runs[name] = train_one(name, seed, s, args, seed_dir, train_split, test)
        # from the nets' own records, so that a resumed seed keeps its real cost
        seconds = sum(r.get("seconds", r["history"].get("seconds", 0.0)) for r in runs.values())
        results.setdefault("seconds_per_seed", {})[str(seed)] = seconds
        print(f"seed {seed}: {len(names)} nets trained and measured in {seconds / 60:.1f} min",
              flush=True)
        save_results(out_dir / "results.json", results)       # partial results survive a crash
    results["verdict"] = verdict(results)
    results["comparisons"] = comparisons(results)
    print(format_verdict(results["verdict"]), flush=True)
    if len(variants) > 2:
        print(format_table(results), flush=True)
    if args.tiny:
        print("(--tiny: synthetic data and a 16-step budget; these verdicts check the pipeline "
              "and say nothing about ResNets)", flush=True)
    return finish(results, out_dir, NAME, plot, clock.seconds)


def with_earlier(out_dir, seeds, variants, env):
    """A resumed run keeps the seeds and variants its folder already holds (results are never
    dropped), then adds the new ones; the first command's environment is kept, and each
    resumption is added to ``environment["resumed"]``."""
    path = out_dir / "results.json"
    if not path.is_file():
        return seeds, variants, env
    saved = json.loads(path.read_text())
    earlier = [int(x) for x in saved.get("seeds", [])]
    earlier_variants = saved.get("variants", list(HEADLINE))
    first = saved.get("environment") or env
    resumed = [*first.get("resumed", []), {k: env[k] for k in ("command", "minires", "numpy")}]
    return (earlier + [x for x in seeds if x not in earlier],
            earlier_variants + [v for v in variants if v not in earlier_variants],
            {**first, "resumed": resumed})


def check_same_setting(out_dir, results):
    """A resumed run must continue the same setting: nets of two settings are never mixed."""
    path = out_dir / "results.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    for key in ("setting", "depths"):
        if json.loads(json.dumps(saved.get(key))) != json.loads(json.dumps(results[key])):
            raise ExperimentError(f"degradation: {out_dir} holds a run with another {key} "
                                  f"({saved.get(key)}); resume it with the same options, or "
                                  f"choose a new --out")


def train_one(name, seed, s, args, seed_dir, train_split, test) -> dict:
    """Train one net (or, when ``seed_dir`` already holds it finished, load its record)."""
    record_path = seed_dir / f"{name}.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        print(f"seed {seed} {name}: already trained ({record_path}); kept", flush=True)
        return record
    model_name, init = split_net_name(name)
    clock = Timer()
    model = build(name, seed, args.device)
    hist = train_net(model, train_split, None, steps=s["steps"], batch_size=s["batch_size"],
                     lr=s["lr"], nesterov=s["nesterov"], weight_decay=s["weight_decay"],
                     warmup_frac=s["warmup_frac"], milestones=s["milestones"],
                     augment=s["augment"], crop_padding=s["crop_padding"],
                     decay_bn_bias=s["decay_bn_bias"], seed=seed, device=args.device,
                     log_every=2 if args.tiny else args.log_every, eval_every_epoch=False,
                     label=f"seed {seed} {name}")
    train_loss, train_acc = evaluate(model, train_split, device=args.device)
    test_loss, test_acc = evaluate(model, test, device=args.device)
    train_error, test_error = 1.0 - train_acc, 1.0 - test_acc
    family, depth, _ = describe_net(name)
    record = {"variant": variant_of(name), "family": family, "init": init, "depth": depth,
              "seed": seed,
              "history": hist, "final_train_error": train_error, "final_train_loss": train_loss,
              "final_test_error": test_error, "final_test_loss": test_loss,
              "parameters": model.num_parameters(), "seconds": clock.seconds}
    meta = {"experiment": NAME, "model": model_name, "init": init, "seed": seed,
            "data": {"input_size": s["input_size"], "train_images": s["train_images"],
                     "balanced": True}}
    save_weights(model, seed_dir / f"{name}.npz", meta=meta)
    save_results(record_path, record)          # last: its presence means "this net is finished"
    print(f"seed {seed} {name}: training error {train_error:.4f} (eval mode, all "
          f"{len(train_split)} training images), test error {test_error:.3f}   "
          f"{hist.get('seconds', 0):.0f}s", flush=True)
    return record


# --- the verdict -------------------------------------------------------------------------------
def near_chance_level(classes=10):
    """An error at or above this is 'still near chance' (chance is 1 - 1/classes)."""
    return 1 - 1 / classes - 0.1


def paired_comparison(a, b, names=("A", "B"), min_gap=MIN_GAP, floor=FLOOR, classes=10) -> dict:
    """Compare two nets' final training errors over seeds: ``a[i]`` and ``b[i]`` from seed i.

    gap_i = b_i - a_i. Returns the gaps, their mean, standard deviation, standard error and
    effect size (mean / std, the paired Cohen's d), and ``direction``: "higher" or "lower"
    (B's error against A's) when it is shown -- every seed's gap has that sign, |mean| >
    ``min_gap`` and |mean| > 2 standard errors -- "no clear difference" otherwise, or
    "inconclusive (...)" when the comparison cannot say anything about optimisation: both
    nets below ``floor`` on average (both fit the training set), both nets near chance
    (neither has learned), or one seed (no spread).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    gaps = b - a
    n = len(gaps)
    mean = float(gaps.mean())
    std = float(gaps.std(ddof=1)) if n > 1 else None
    se = std / math.sqrt(n) if std is not None else None
    out = {"gaps": gaps.tolist(), "mean_gap": mean, "std_gap": std, "se_gap": se,
           "effect_size": (mean / std if std else None) if n > 1 else None,
           "mean_a": float(a.mean()), "mean_b": float(b.mean()), "seeds": n,
           "min_gap": float(gaps.min()), "max_gap": float(gaps.max())}
    chance = near_chance_level(classes)
    stuck = [f"{name} ({e:.3f})" for name, errors in zip(names, (a, b)) for e in errors
             if e >= chance] if a.mean() >= chance and b.mean() >= chance else []
    if a.mean() < floor and b.mean() < floor:
        out["direction"] = (f"inconclusive (both fit the training set: {names[0]} "
                            f"{a.mean():.4f}, {names[1]} {b.mean():.4f}, both below {floor})")
    elif stuck:
        out["direction"] = ("inconclusive (both nets are still near chance: "
                            + ", ".join(stuck) + ")")
    elif n < 2:
        out["direction"] = "inconclusive (one seed: no spread to compare the gap with)"
    elif abs(mean) > min_gap and abs(mean) > 2 * se and (np.all(gaps > 0) or np.all(gaps < 0)):
        out["direction"] = "higher" if mean > 0 else "lower"
    else:
        out["direction"] = "no clear difference"
    return out


def _errors(results, name):
    """{seed: final training error} of net ``name`` over the seeds that trained it."""
    return {seed: runs[name]["final_train_error"] for seed, runs in results["runs"].items()
            if name in runs}


def compare_nets(results, name_a, name_b, classes=10) -> dict | None:
    """``paired_comparison`` of two nets over the seeds that trained both (None if none did)."""
    ea, eb = _errors(results, name_a), _errors(results, name_b)
    seeds = [s for s in ea if s in eb]
    if not seeds:
        return None
    return {"a": name_a, "b": name_b, "seeds_used": seeds,
            **paired_comparison([ea[s] for s in seeds], [eb[s] for s in seeds], (name_a, name_b),
                                classes=classes)}


def verdict(results, classes=10) -> dict:
    """Per headline family: the comparison of deep against shallow, and 'shown' / 'not shown
    (...)' / 'inconclusive (...)' for the paper's claim about that family."""
    shallow, deep = sorted(results["depths"])
    out = {}
    for family, (claimed, claim) in CLAIM.items():
        c = compare_nets(results, f"{family}{shallow}", f"{family}{deep}", classes)
        if c is None:
            continue
        d = c["direction"]
        if d == claimed:
            word = "shown"
        elif d.startswith("inconclusive"):
            word = d
        elif d == "no clear difference":
            word = (f"not shown (no clear difference: the gap must exceed {MIN_GAP} and twice its "
                    f"standard error, with every seed agreeing)")
        else:
            word = (f"not shown (the opposite holds: the deeper net trains "
                    f"{'worse' if d == 'higher' else 'better'})")
        out[family] = {"claim": claim, "shallow": shallow, "deep": deep, **c, "verdict": word}
    return out


def comparisons(results) -> list:
    """Every comparison the trained variants allow: deep vs shallow within each variant, and
    at each depth each departure against He et al.'s init and the residual nets against the
    plain nets of either init. Rows of ``compare_nets``."""
    shallow, deep = sorted(results["depths"])
    have = set(results.get("variants", HEADLINE))
    rows = []
    name = variant_net
    for v in ABLATION:
        if v in have:
            rows.append({"question": f"{v}: depth {deep} vs {shallow}",
                         **compare_nets(results, name(v, shallow), name(v, deep))})
    pairs = [("plain", "plain-dirac", "identity init vs He init, plain"),
             ("resnet", "resnet-zero", "zero-init branches vs He init, residual"),
             ("plain", "resnet", "shortcuts vs none, He init"),
             ("plain-dirac", "resnet", "shortcuts (He init) vs identity-initialised plain")]
    for a, b, question in pairs:
        if a in have and b in have:
            for depth in (shallow, deep):
                c = compare_nets(results, name(a, depth), name(b, depth))
                if c is not None:
                    rows.append({"question": f"{question}, depth {depth}", **c})
    return [r for r in rows if r.get("seeds")]


def _stat(c) -> str:
    """'+0.4920 +- 0.0130 (SE over 3 seeds; d = 22.0; range +0.47 .. +0.51)'."""
    if c["se_gap"] is None:
        return f"{c['mean_gap']:+.4f} (1 seed: no spread; use --seeds for several)"
    d = "inf" if c["effect_size"] is None else f"{c['effect_size']:.1f}"
    return (f"{c['mean_gap']:+.4f} +- {c['se_gap']:.4f} (standard error over {c['seeds']} seeds; "
            f"effect size d = {d}; range {c['min_gap']:+.4f} .. {c['max_gap']:+.4f})")


def _loud(word):
    """'not shown (reason)' -> 'NOT SHOWN (reason)'."""
    head, sep, rest = word.partition(" (")
    return head.upper() + sep + rest


def format_verdict(v) -> str:
    lines = []
    for family, r in v.items():
        lines.append(f"{'plain nets' if family == 'plain' else 'residual nets'}: training error "
                     f"{r['b']} {r['mean_b']:.4f}, {r['a']} {r['mean_a']:.4f}; gap "
                     f"{_stat(r)}; claim '{r['claim']}': {_loud(r['verdict'])}")
    return "\n".join(lines)


def format_table(results) -> str:
    """The ablation as a Markdown table: one row per comparison, with its verdict."""
    lines = ["| comparison | A | B | error A | error B | gap B - A (mean +- SE) | d | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for c in results.get("comparisons") or comparisons(results):
        se = "-" if c["se_gap"] is None else f"{c['se_gap']:.4f}"
        d = "-" if c["effect_size"] is None else f"{c['effect_size']:.1f}"
        word = {"higher": "B trains worse", "lower": "B trains better"}.get(c["direction"],
                                                                           c["direction"])
        lines.append(f"| {c['question']} | {c['a']} | {c['b']} | {c['mean_a']:.4f} | "
                     f"{c['mean_b']:.4f} | {c['mean_gap']:+.4f} +- {se} | {d} | {word} |")
    return "\n".join(lines)


# --- the figure --------------------------------------------------------------------------------
def plot(results):
    variants = [v for v in ABLATION if v in results.get("variants", HEADLINE)]
    fig = new_figure((5.5 * len(variants), 4))
    axes = dict(zip(variants, np.atleast_1d(fig.subplots(1, len(variants), sharey=True))))
    depths = sorted(results["depths"])
    for variant, ax in axes.items():
        family, init = VARIANTS[variant]
        for i, depth in enumerate(depths):
            name, color = variant_net(variant, depth), f"C{i}"
            curves = [runs[name]["history"] for runs in results["runs"].values() if name in runs]
            for hist in curves:
                ax.plot(hist["steps"], hist["train_error"], color=color, lw=0.6, alpha=0.5)
            finals = [runs[name]["final_train_error"] for runs in results["runs"].values()
                      if name in runs]
            if finals:
                ax.plot([curves[0]["steps_total"]] * len(finals), finals, "o", color=color,
                        ms=5, label=f"{name}: {np.mean(finals):.3f} at the end (eval mode)")
        v = results.get("verdict", {}).get(variant)
        title = f"{family} nets, {INITS[init].split(' (')[0]} init"
        if v:
            title += f": {v['verdict'].split(' (')[0]}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
        ax.axhline(0.9, color="gray", ls=":", lw=1)
        ax.legend(fontsize=7)
        ax.set_ylim(0, 1)
    s = results["setting"]
    axes[variants[0]].set_ylabel("training error (running, per batch)")
    fig.suptitle(f"{s['train_images']} CIFAR-10 images at {s['input_size']}x{s['input_size']}"
                 f"{', crop + flip' if s['augment'] else ''}, {s['steps']} iterations, "
                 f"{len(results['runs'])} seed(s)", fontsize=9)
    return fig
