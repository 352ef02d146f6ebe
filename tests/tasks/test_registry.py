import pytest

from ssl3d_keras import tasks
from ssl3d_keras.errors import ConfigError


def test_the_five_paper_tasks_are_listed():
    assert tasks.list_tasks() == ["cpc", "exemplar", "jigsaw", "rotation", "rpl"]


def test_unknown_task_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="unknown task 'jigsw'.*did you mean 'jigsaw'"):
        tasks.get_class("jigsw")


def test_each_name_resolves_to_its_registered_class():
    for name in tasks.list_tasks():
        cls = tasks.get_class(name)
        assert cls.task_name == name
