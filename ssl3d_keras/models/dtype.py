"""`dtype_policy`: the one context that sets the global Keras dtype policy for a while.

Example:

>>> import keras
>>> with dtype_policy("mixed_bfloat16"):
...     keras.config.dtype_policy().name
'mixed_bfloat16'
>>> keras.config.dtype_policy().name
'float32'
"""

import contextlib

import keras

__all__ = ["dtype_policy"]


@contextlib.contextmanager
def dtype_policy(name):
    """Set the global Keras dtype policy inside the block, restore it after.

    Models must be built inside the block to pick the policy up (e.g. the
    `keras.applications` builders, which take no dtype argument).

    Args:
        name: a policy name (`"float32"`, `"mixed_bfloat16"`, ...), a
            `keras.DTypePolicy`, or None to leave the policy as it is.
    """
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
