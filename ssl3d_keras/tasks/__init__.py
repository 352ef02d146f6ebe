"""The proxy tasks, by name.

Example:

>>> from ssl3d_keras import tasks
>>> tasks.list_tasks()
['cpc', 'exemplar', 'jigsaw', 'rotation', 'rpl']
>>> task = tasks.get("rotation", input_shape=(32, 32, 32, 1))
"""

from ssl3d_keras.tasks.registry import get, get_class, list_tasks, register_task

__all__ = ["get", "get_class", "list_tasks", "register_task"]
