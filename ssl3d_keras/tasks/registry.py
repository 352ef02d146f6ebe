"""Name registry of the proxy tasks.

Each task module registers its class with `@register_task("name")`; modules are
imported on first lookup so listing names costs nothing.
"""

import importlib

from ssl3d_keras.config import closest
from ssl3d_keras.errors import ConfigError

__all__ = ["get", "get_class", "get_task", "list_tasks", "register_task"]

# Where each built-in task is defined; imported on first use.
BUILTIN_TASKS = {
    "cpc": "ssl3d_keras.tasks.cpc",
    "exemplar": "ssl3d_keras.tasks.exemplar",
    "jigsaw": "ssl3d_keras.tasks.jigsaw",
    "rotation": "ssl3d_keras.tasks.rotation",
    "rpl": "ssl3d_keras.tasks.rpl",
}

_REGISTRY = {}


def register_task(name):
    """Class decorator that registers a `ProxyTask` subclass under `name`."""

    def decorator(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"task '{name}' is already registered by {_REGISTRY[name]!r}")
        cls.task_name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def list_tasks():
    """Sorted names of all available tasks."""
    return sorted(set(BUILTIN_TASKS) | set(_REGISTRY))


def get_class(name):
    """The `ProxyTask` subclass registered as `name`.

    Raises:
        ConfigError: no task has that name (the message suggests the closest).
    """
    if name not in _REGISTRY and name in BUILTIN_TASKS:
        importlib.import_module(BUILTIN_TASKS[name])
    if name not in _REGISTRY:
        raise ConfigError("task", f"unknown task '{name}'{closest(name, list_tasks())}; "
                          f"available: {', '.join(list_tasks())}")
    return _REGISTRY[name]


def get(name, **config):
    """Build the task `name` from its config keyword arguments.

    Returns:
        A `ProxyTask` (a `keras.Model`) with its encoder.
    """
    return get_class(name)(**config)


# The registries' shared verb pair: get_task / list_tasks (`get` is the original name).
get_task = get
