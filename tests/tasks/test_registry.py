import pytest

from ssl3d_keras import tasks
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.tasks.registry import BUILTIN_TASKS

PAPER_TASKS = ["cpc", "exemplar", "jigsaw", "rotation", "rpl"]


def test_the_five_paper_tasks_are_listed():
    # Other tests may register test doubles, so only the built-in names are pinned.
    assert sorted(BUILTIN_TASKS) == PAPER_TASKS
    assert set(PAPER_TASKS) <= set(tasks.list_tasks())


def test_unknown_task_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="unknown task 'jigsw'.*did you mean 'jigsaw'"):
        tasks.get_class("jigsw")


def test_each_name_resolves_to_its_registered_class():
    for name in PAPER_TASKS:
        cls = tasks.get_class(name)
        assert cls.task_name == name
