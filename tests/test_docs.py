"""Every public function, class, method and property of minires has a docstring.

Public means: each name in a module's ``__all__`` (or, for a module without one, each
name not starting with "_") of the modules below; for a class defined in minires, also
its methods and properties whose names do not start with "_" (plus ``__call__``),
including those it inherits from other minires classes (``help()`` shows them) but not
those inherited from Python or NumPy. Names imported from outside minires are not ours
to document and are skipped. The failure lists every name that lacks a docstring.
"""
import dataclasses
import importlib
import inspect

MODULES = ["minires", "minires.export", "minires.functional", "minires.nn", "minires.models",
           "minires.optim", "minires.data", "minires.inspect", "minires.checkpoint",
           "minires.train", "minires.gradcheck", "minires.backend", "minires.speed",
           "minires.experiments"]


def _ours(obj):
    return (getattr(obj, "__module__", None) or "").split(".")[0] == "minires"


def _public_names(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return names


def _function_of(member):
    """The function behind a class member (method, static/class method, property getter)."""
    if isinstance(member, property):
        return member.fget
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    return member if inspect.isfunction(member) else None


def _generated_doc(cls):
    """The text @dataclass or namedtuple put in ``__doc__`` when the class has no docstring."""
    if dataclasses.is_dataclass(cls):
        try:
            return cls.__name__ + str(inspect.signature(cls)).replace(" -> None", "")
        except (TypeError, ValueError):
            return None
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return f"{cls.__name__}({', '.join(cls._fields)})"
    return None


def _has_doc(obj):
    doc = (getattr(obj, "__doc__", None) or "").strip()
    if inspect.isclass(obj) and doc == _generated_doc(obj):
        return False        # only the signature that @dataclass / namedtuple wrote
    return bool(doc)


def _public_api():
    """(label, object) for every public module-level function and class, each object once."""
    seen, out = set(), []
    for mname in MODULES:
        module = importlib.import_module(mname)
        for name in _public_names(module):
            obj = getattr(module, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not _ours(obj):
                continue
            if id(obj) not in seen:
                seen.add(id(obj))
                out.append((f"{mname}.{name}", obj))
    return out


def undocumented():
    """Sorted labels of every public function, class, method and property without a docstring."""
    api = _public_api()
    label_of = {id(obj): label for label, obj in api}
    missing, checked_members = set(), set()
    for label, obj in api:
        if not _has_doc(obj):
            missing.add(label)
        if not inspect.isclass(obj):
            continue
        for base in obj.__mro__:
            if not _ours(base):
                continue                            # object, Exception, ...: not ours
            base_label = label_of.get(id(base), f"{base.__module__}.{base.__qualname__}")
            for name, member in vars(base).items():
                if name.startswith("_") and name != "__call__":
                    continue
                fn = _function_of(member)
                if fn is None or (base, name) in checked_members:
                    continue
                checked_members.add((base, name))
                if not _has_doc(fn):
                    missing.add(f"{base_label}.{name}")
    return sorted(missing)


def test_public_api_is_documented():
    missing = undocumented()
    assert not missing, (f"{len(missing)} public names have no docstring:\n  "
                         + "\n  ".join(missing))


def test_the_walk_finds_the_api():
    # guard against a walk that silently checks nothing
    labels = {label for label, _ in _public_api()}
    for name in ("minires.functional.relu", "minires.nn.Module", "minires.models.resnet20",
                 "minires.optim.SGD", "minires.Tensor", "minires.Function"):
        assert name in labels, name


if __name__ == "__main__":     # python tests/test_docs.py: print what is missing
    found = undocumented()
    print(len(found))
    print("\n".join(found))
