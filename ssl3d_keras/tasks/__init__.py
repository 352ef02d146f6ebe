"""The proxy tasks, by name.

Example:

>>> from ssl3d_keras import tasks
>>> tasks.list_tasks()  # the five of the paper, and any you register
['cpc', 'exemplar', 'jigsaw', 'rotation', 'rpl'...]
>>> task = tasks.get_task("rotation", input_shape=(32, 32, 32, 1))

Every registry has one verb pair: `get_task` / `list_tasks`,
`ssl3d_keras.models.get_encoder` / `list_encoders`,
`ssl3d_keras.zoo.get_recipe` / `list_recipes`. (`tasks.get` is `get_task`.)
"""

from ssl3d_keras.tasks.registry import get, get_class, get_task, list_tasks, register_task

__all__ = ["get", "get_class", "get_task", "list_tasks", "register_task"]
