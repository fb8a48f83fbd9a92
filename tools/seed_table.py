#!/usr/bin/env python
"""The README's three-seed table of the measurements made on the degradation run's nets.

    python tools/seed_table.py                   # from docs/results/seed30, seed31, seed32

Each folder holds what ``python -m minires.experiments NAME --from runs/degradation/seed-S``
wrote (feature-reuse, layer-responses, path-lengths, lesion --depth 56). Per measure: the
value on each seed, the mean and its standard error over the seeds, and whether every seed
points the same way -- the rule the degradation verdict uses, without its minimum effect
(each measure has its own unit), so the reading is left to the text beside the table.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHANCE = 0.9                    # CIFAR-10's test error at chance


def load(folder, name):
    path = folder / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"seed_table: {path} is missing (run the experiment with --from "
                         f"runs/degradation/seed-S and copy its results.json there)")
    return json.loads(path.read_text())


def measures(folder):
    """{measure: value} for one seed's folder."""
    fr = load(folder, "feature-reuse")["models"]
    lr = load(folder, "layer-responses")["models"]
    pl = load(folder, "path-lengths")
    le = load(folder, "lesion")["models"]

    def lesion_cost(net):       # mean error increase from removing one block / layer
        return le[net]["mean_error_after_lesion"] - le[net]["test_error"]

    def lesion_share(net):      # ... as a share of what the net had learned above chance
        return lesion_cost(net) / (CHANCE - le[net]["test_error"])

    return {
        "resnet56 ‖F(x)‖/‖x‖, trained - init": (fr["resnet56"]["trained_mean_branch_ratio"]
                                                    - fr["resnet56"]["init_mean_branch_ratio"]),
        "plain56 ‖F(x)‖/‖x‖, trained - init": (fr["plain56"]["trained_mean_branch_ratio"]
                                                   - fr["plain56"]["init_mean_branch_ratio"]),
        "response std resnet20 - plain20, init": (lr["resnet20"]["init_mean_std"]
                                                  - lr["plain20"]["init_mean_std"]),
        "response std resnet20 - plain20, trained": (lr["resnet20"]["mean_std"]
                                                     - lr["plain20"]["mean_std"]),
        "response std resnet56 - plain56, init": (lr["resnet56"]["init_mean_std"]
                                                  - lr["plain56"]["init_mean_std"]),
        "response std resnet56 - plain56, trained": (lr["resnet56"]["mean_std"]
                                                     - lr["plain56"]["mean_std"]),
        "resnet56 mean path length, init": pl["init"]["mean_length"],
        "resnet56 mean path length, trained": pl["mean_length"],
        "resnet56 mean path length, trained - init": pl["mean_length"] - pl["init"]["mean_length"],
        "lesion: test error of resnet56": le["resnet56"]["test_error"],
        "lesion: test error of plain56": le["plain56"]["test_error"],
        "lesion: error added, one resnet56 block": lesion_cost("resnet56"),
        "lesion: error added, one plain56 layer": lesion_cost("plain56"),
        "lesion: share of above-chance accuracy lost, resnet56": lesion_share("resnet56"),
        "lesion: share of above-chance accuracy lost, plain56": lesion_share("plain56"),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="30,31,32")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results",
                        help="the folder holding seedS/ (default: docs/results)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if len(seeds) < 2:
        raise SystemExit(f"seed_table: a standard error needs 2 seeds or more, got {args.seeds}")
    per_seed = {s: measures(args.results / f"seed{s}") for s in seeds}
    print("| measure | " + " | ".join(f"seed {s}" for s in seeds)
          + " | mean ± SE | every seed the same sign |")
    print("|---|" + "---|" * len(seeds) + "---|---|")
    for name in per_seed[seeds[0]]:
        values = [per_seed[s][name] for s in seeds]
        mean = sum(values) / len(values)
        se = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
        change = " - " in name or "added" in name or "lost" in name    # a difference: signed
        same = ("yes" if all(v > 0 for v in values) or all(v < 0 for v in values) else "no") \
            if change else "(a level)"
        fmt = "{:+.3f}" if change else "{:.3f}"
        print(f"| {name} | " + " | ".join(fmt.format(v) for v in values)
              + f" | {fmt.format(mean)} ± {se:.3f} | {same} |")


if __name__ == "__main__":
    main()
