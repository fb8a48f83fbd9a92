"""The weights of trained nets on disk: saving a net an experiment trained, and loading the
nets of an earlier run (``--from``) without ever mixing seeds.

A degradation run keeps ``seed-S/NAME.npz`` per seed (``all`` one level deeper, under
``degradation/``); ``python -m minires.train`` keeps one net per checkpoint file. Each
checkpoint's metadata says which model it holds, how its weights started (``init``) and the
input size it was trained at (``data.input_size``). A ``--from`` that cannot give the nets
asked for is an :class:`~minires.experiments.options.ExperimentError` naming what is missing.
"""
from __future__ import annotations

from pathlib import Path

from .. import checkpoint, models
from .nets import net_name
from .options import ExperimentError


def save_weights(model, path, meta=None):
    """``model``'s weights, with ``meta`` (how it was trained), as a minires checkpoint."""
    return checkpoint.save(path, model, meta=meta or {})


def _seed_folders(source):
    """The ``seed-S`` folders of a degradation run (or of ``all``'s), by seed number."""
    folders = [*source.glob("seed-*"), *source.glob("degradation/seed-*")]
    numbered = [(int(p.name[5:]), p) for p in folders if p.is_dir() and p.name[5:].isdigit()]
    return [p for _, p in sorted(numbered)]


def nets_from(source, names, device="cpu", seed=None):
    """{name: (model in eval mode, metadata, path)} for every net in ``names``, from one place.

    ``source`` is a folder of a degradation run (``NAME.npz`` there or in its ``seed-*``
    folders) or, for one name, a checkpoint file (``python -m minires.train``'s
    ``best.npz``). In a run folder every net comes from the *same* seed: ``seed`` when given,
    else the lowest seed whose folder holds all of them -- nets of different seeds are never
    mixed. The metadata says how each net was trained and how it started: ``data.input_size``
    (8 or 16 for the laptop degradation nets, 32 for a CIFAR run) and ``init``.
    """
    source = Path(source)
    if source.is_file():
        if len(names) != 1:
            raise ExperimentError(f"--from {source}: a checkpoint file holds one net, but "
                                  f"{len(names)} were asked for ({', '.join(names)}); give a "
                                  f"degradation run folder")
        return {names[0]: _load_net(source, names[0], device)}
    if not source.is_dir():
        raise ExperimentError(f"--from {source}: no such folder or checkpoint file")
    folders = [source, *_seed_folders(source)]
    if seed is not None:
        folders = [f for f in folders[1:] if f.name == f"seed-{seed}"]
    folder = next((f for f in folders if all((f / f"{n}.npz").is_file() for n in names)), None)
    if folder is None:
        absent = [n for n in names if not any((f / f"{n}.npz").is_file() for f in folders)]
        if absent:
            raise ExperimentError(
                f"--from {source}: no {', '.join(n + '.npz' for n in absent)} there or in its "
                f"{'seed-' + str(seed) if seed is not None else 'seed-*'} folder(s) (expected a "
                f"degradation run that trained {'it' if len(absent) == 1 else 'them'})")
        raise ExperimentError(f"--from {source}: no one seed-* folder there holds all of "
                              f"{', '.join(n + '.npz' for n in names)}: nets of different seeds "
                              f"are not compared")
    return {n: _load_net(folder / f"{n}.npz", n, device) for n in names}


def net_from(source, name=None, device="cpu"):
    """One trained net: ``nets_from(source, [name])[name]`` (``name`` may be None for a
    checkpoint file: the net it names)."""
    if name is None:
        return _load_net(Path(source), None, device)
    return nets_from(source, [name], device)[name]


def _load_net(path, name, device):
    if not Path(path).is_file():
        raise ExperimentError(f"--from {path}: no such checkpoint file")
    ckpt = checkpoint.load(path)
    meta = ckpt.meta or {}
    saved = meta.get("model") or (meta.get("config") or {}).get("model")
    if saved is None:
        raise ExperimentError(f"--from {path}: the checkpoint does not say which model it holds")
    # how its weights started: "init" (or the older flag zero_init_residual)
    init = meta.get("init") or ("zero" if meta.get("zero_init_residual") else "paper")
    full = net_name(saved, init)
    older = "init" not in meta              # written before nets were named by their init
    if name is not None and name != full and not (older and name == saved):
        raise ExperimentError(f"--from {path}: holds {full}, but {name} was asked for")
    model = models.get_model(saved).to(device)
    checkpoint.restore(ckpt, model)
    model.eval()
    # a checkpoint that does not say its input size was trained on the images as they come
    meta = {**meta, "model": saved, "init": init, "net": full,
            "data": meta.get("data", {"input_size": None})}
    return model, meta, Path(path)


def input_size_of(loaded):
    """The one input size the loaded nets (``{name: net_from(...)}``) were trained at, or None
    when nothing was loaded; refuses nets of different sizes."""
    sizes = {meta["data"]["input_size"] for _, meta, _ in loaded.values()} - {None}
    if len(sizes) > 1:
        raise ExperimentError(f"--from: the nets were trained on different input sizes "
                              f"{sorted(sizes)}; compare nets of one run")
    return sizes.pop() if sizes else None


__all__ = ["input_size_of", "net_from", "nets_from", "save_weights"]
