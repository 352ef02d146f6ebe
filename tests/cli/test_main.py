import subprocess
import sys

from click.testing import CliRunner

from ssl3d_keras.cli.main import COMMANDS, cli

INTERFACE = ["pretrain", "finetune", "predict", "export", "prepare", "phantoms", "show", "benchmark",
             "data-service", "zoo", "info"]


def test_help_lists_every_command_of_the_interface():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in INTERFACE:
        assert f"  {name} " in result.output
    assert set(COMMANDS) == set(INTERFACE)


def test_every_command_has_its_own_help():
    runner = CliRunner()
    for name in INTERFACE:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output


def test_help_does_not_import_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from ssl3d_keras.cli.main import cli;"
            "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0;"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "ssl3d_keras", "--version"], capture_output=True,
                         text=True, check=True)
    assert "ssl3d" in out.stdout and "0.1.0" in out.stdout


def test_warnings_are_one_plain_line_only_while_a_command_runs():
    import warnings

    before = warnings.formatwarning
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    assert warnings.formatwarning is before  # no global side effect for library users
