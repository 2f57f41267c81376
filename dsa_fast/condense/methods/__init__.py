"""The condensation methods (``--method``): one line each in ``REGISTRY``.

A method is a ``Method`` subclass in its own module of this package (``base.py`` says what it
declares and what it gets); its line below names the module and the class. ``config.py`` and
``cli.py`` take the list of methods, their defaults, help and settings from here.
``register_method`` adds one from elsewhere (a plugin, a test).
"""
from __future__ import annotations

from importlib import import_module
from typing import Tuple, Type

from ..registry import Registry
from .base import Method, RunState

# module:class of every method, in the order of --method's choices and help.
REGISTRY: Tuple[str, ...] = (
    "gradient:DSA",  # dsa (the default): gradient matching with DSA
    "gradient:DC",  # dc: gradient matching without augmentation
    "distribution:DM",  # dm: distribution matching
    "mtt:MTT",  # mtt: trajectory matching
)

_METHODS: Registry[Type[Method]] = Registry("method")


def register_method(cls: Type[Method]) -> Type[Method]:
    """Make ``cls`` (a ``Method`` subclass with a ``name``) a choice of ``--method``; returns it."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"dsa_fast.condense: register_method takes a Method subclass, got {cls!r}")
    if not cls.name or cls.name != cls.name.strip():
        raise ValueError(f"dsa_fast.condense: method class {cls.__name__} has no name")
    if cls.iteration is Method.iteration:
        raise TypeError(f"dsa_fast.condense: method {cls.name!r} ({cls.__name__}) defines no iteration()")
    return _METHODS.add(cls.name, cls)


def unregister_method(name: str) -> None:
    """Remove the method ``name`` (registered by ``register_method``)."""
    _METHODS.remove(name)


def method_names() -> Tuple[str, ...]:
    return tuple(_METHODS)


def methods() -> Tuple[Type[Method], ...]:
    return tuple(_METHODS.values())


def get_method(name: str) -> Type[Method]:
    """The class of the method ``name``, or a ValueError naming the methods there are."""
    return _METHODS.entry(name)


for _line in REGISTRY:
    _module, _, _cls = _line.partition(":")
    register_method(getattr(import_module("." + _module, __name__), _cls))
del _line, _module, _cls

__all__ = ["Method", "RunState", "register_method", "unregister_method", "method_names", "methods", "get_method"]
