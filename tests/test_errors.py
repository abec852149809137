"""One base class for what the library refuses: every public error class of p2p_demo (and train) derives
from p2p_demo.errors.P2PError, so a caller catches them all with one ``except``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import p2p_demo
import train
from p2p_demo.errors import P2PError


def error_classes(package) -> list[type]:
    found = []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.endswith("__main__") and package is train:
            continue  # train's command line imports every command on demand; nothing defined there
        mod = importlib.import_module(info.name)
        found += [c for n, c in vars(mod).items() if inspect.isclass(c) and issubclass(c, BaseException)
                  and c.__module__ == mod.__name__ and not n.startswith("_")]
    return found


def test_every_public_error_class_derives_from_one_base():
    library, training = error_classes(p2p_demo), error_classes(train)
    assert len(library) >= 12 and len(training) >= 5
    assert [c.__qualname__ for c in library + training if not issubclass(c, P2PError)] == []


def test_errors_keep_their_builtin_classes_too():
    from p2p_demo.edges import NothingDrawn
    from p2p_demo.registry import HubUnavailable, ModelNotFound

    assert issubclass(NothingDrawn, ValueError) and issubclass(ModelNotFound, LookupError)
    assert issubclass(HubUnavailable, ConnectionError)
