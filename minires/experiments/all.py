"""The whole chain: degradation first, then every other experiment on the nets it trained.

    python -m minires.experiments all --out runs/all            # about 3 hours on 2 cores (3 seeds)
    python -m minires.experiments all --out runs/all --resume   # after Ctrl-C: finish the rest

Each experiment writes into its own sub-folder of ``--out``; ``report.md`` there gathers
every verdict, number and figure. A finished part is never redone: ``--resume`` keeps it
(and, inside the degradation run, every net already trained) and runs what is missing.
"""
from __future__ import annotations

from pathlib import Path

from ..files import write_text
from .results import Timer, environment, output_folder, save_results

NAME = "all"
DESCRIPTION = ("Degradation, then the loss landscape, feature reuse, lesion, layer responses,\n"
               "path lengths and gradient-at-init on its nets; one report.md.")


# --resume keeps every finished net (or part) and computes the rest, even after the run was
# complete: a resumed degradation run with more --seeds adds the new seeds.
HANDLES_RESUME = True

def add_arguments(parser):
    parser.add_argument("--seeds", default=None, help="seeds of the degradation run (default: "
                        "its own, 30,31,32; with --tiny --seed); the other experiments use the "
                        "nets of its lowest seed")
    parser.add_argument("--ablation", action="store_true", help="passed to the degradation run: "
                        "also train Dirac-initialised plain and zero-initialised residual nets")


def steps(args, out):
    """(name, argv) of every experiment of the chain, in order."""
    deg = str(out / "degradation")
    common = ["--seed", str(args.seed), "--device", args.device]
    if args.data_dir:
        common += ["--data-dir", args.data_dir]
    if args.tiny:
        common.append("--tiny")
    small = args.tiny
    deg_argv = [*common] + (["--seeds", args.seeds] if args.seeds else []) \
        + (["--ablation"] if args.ablation else [])
    deep = "14" if small else "56"
    shallow = "8" if small else "20"
    # with --ablation the measurements of the untrained-vs-trained nets take both inits
    reuse = ["--models", f"plain{deep},plain{deep}-dirac,resnet{deep},resnet{deep}-zero"] \
        if args.ablation else []
    responses = ["--models", ",".join(f"{f}{d}{i}" for f, i in (("plain", ""), ("resnet", ""),
                                                                 ("resnet", "-zero"))
                                      for d in (shallow, deep))] if args.ablation else []
    return [
        ("degradation", deg_argv),
        ("loss-landscape", [*common, "--from", deg]),
        ("feature-reuse", [*common, "--from", deg, *reuse]),
        ("lesion", [*common, "--from", deg, "--depth", deep]),
        ("layer-responses", [*common, "--from", deg, *responses]),
        ("path-lengths", [*common, "--from", deg, "--model", f"resnet{deep}"]),
        ("gradient-at-init", [*common]),
    ]


def run(args):
    from . import run_experiment
    out = output_folder(args)
    clock = Timer()
    done = {}
    for name, argv in steps(args, out):
        sub = out / name
        print(f"\n=== {name} ({clock.seconds / 60:.1f} min so far) ===", flush=True)
        argv = [*argv, "--out", str(sub)] + (["--resume"] if sub.exists() else [])
        done[name] = run_experiment(name, argv)
    results = {"experiment": NAME, "environment": environment(args), "seconds": clock.seconds,
               "parts": list(done), "complete": True}
    save_results(out / "results.json", results)
    write_text(out / "report.md", report(done, out, clock.seconds), what="report")
    print(f"\nreport in {out / 'report.md'} ({clock.seconds / 60:.1f} min)")
    return results


# --- the report ----------------------------------------------------------------------------------
def _fig(name, out):
    fig = Path(out) / name / f"{name}.png"
    return [f"![{name}]({name}/{name}.png)", ""] if fig.is_file() else []


def _degradation(d):
    from .degradation import format_table, format_verdict
    s, names = d["setting"], _names(d)
    lines = ["## Degradation (He et al. 2015, Fig. 6)", "",
             f"{s['train_images']} training images at {s['input_size']}x{s['input_size']}"
             f"{' with crop and flip' if s['augment'] else ''}, {s['steps']} iterations of batch "
             f"{s['batch_size']}, seeds {d['seeds']}; He et al.'s initialisation unless the net's "
             f"name says otherwise (-dirac, -zero).", "",
             "| seed | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for seed, runs in d["runs"].items():
        lines.append(f"| {seed} | " + " | ".join(f"{runs[n]['final_train_error']:.4f}"
                                                for n in names) + " |")
    lines += ["", "Final training error, eval mode, on the whole training set.", "",
              "```", format_verdict(d["verdict"]), "```", ""]
    if len(d.get("variants", [])) > 2:
        lines += ["### Architecture or initialisation?", "", format_table(d), ""]
    return lines


def _loss_landscape(r):
    lines = ["## Loss landscape (Li et al. 2018)", "",
             "| net | loss at the trained weights | non-convex share | slice TV ratio | "
             "edge rise |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {m['center_loss']:.3f} | {m['nonconvex_share']:.2f} | "
              f"{m['slice_tv_ratio']:.2f} | {m['edge_rise']:.2f} |"
              for name, m in r["models"].items()]
    return lines + ["", f"On {r['images']} training images; grid {r['grid']}x{r['grid']} over "
                    f"[-{r['span']}, {r['span']}]^2 of filter-normalised directions.", ""]


def _feature_reuse(r):
    lines = ["## Feature reuse", "", "| net | when | mean ‖F(x)‖/‖x‖ | mean cos(x, out) |",
             "|---|---|---|---|"]
    for name, m in r["models"].items():
        for when in ("init", "trained"):
            if f"{when}_mean_branch_ratio" in m:
                cos = m[f"{when}_mean_cosine"]
                lines.append(f"| {name} | {when} | {m[f'{when}_mean_branch_ratio']:.3f} | "
                             f"{'-' if cos is None else f'{cos:.3f}'} |")
    return lines + [""]


def _lesion(r):
    return ["## Lesion (Veit et al. 2016)", ""] + [
        f"- {name}: test error {m['test_error']:.3f} intact, {m['mean_error_after_lesion']:.3f} "
        f"on average with one {m['unit']} removed ({len(m['lesions'])} lesions)"
        for name, m in r["models"].items()] + [""]


def _layer_responses(r):
    return ["## Layer responses (He et al. 2015, Fig. 7)", ""] + [
        f"- {name}: mean std of the 3x3 layers' responses {sum(m['std']) / len(m['std']):.3f}"
        for name, m in r["models"].items()] + [""]


def _path_lengths(r):
    return ["## Path lengths (Veit et al. 2016)", "",
            f"{r['model']} ({r['blocks']} blocks): paths of length <= "
            f"{r['length_reaching_50pct']} carry 50% of the sampled gradient magnitude, "
            f"<= {r['length_reaching_90pct']} carry 90% (typical length {r['blocks'] / 2:g}"
            + (f"; <= {r['equal_gradients']['length_reaching_50pct']} and <= "
               f"{r['equal_gradients']['length_reaching_90pct']} if every path carried the same "
               f"gradient" if "equal_gradients" in r else "") + ").", ""]


def _gradient_at_init(r):
    return ["## Gradients at initialisation", ""]


# each part of the chain and how its results read in the report (then its figure)
SECTIONS = {"degradation": _degradation, "loss-landscape": _loss_landscape,
            "feature-reuse": _feature_reuse, "lesion": _lesion,
            "layer-responses": _layer_responses, "path-lengths": _path_lengths,
            "gradient-at-init": _gradient_at_init}


def report(done, out, seconds) -> str:
    """Markdown: every experiment's verdict and numbers, with its figure."""
    lines = [f"# The experiments of the ResNet papers, measured ({seconds / 60:.1f} min)", ""]
    for name, section in SECTIONS.items():
        if done.get(name):
            lines += section(done[name]) + _fig(name, out)
    return "\n".join(lines) + "\n"


def _names(d):
    from .degradation import ABLATION, HEADLINE, variant_net
    return [variant_net(v, depth) for v in ABLATION if v in d.get("variants", HEADLINE)
            for depth in sorted(d["depths"])]
