"""The dispatcher: command modules register themselves; missing and broken modules are loud."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelplex import cli

OWNED = ("validate", "chat")


def subcommands(names: tuple[str, ...]) -> dict[str, object]:
    parser = cli.build_parser(names)
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)


@pytest.mark.parametrize("name", OWNED)
def test_command_modules_exist_and_register(name: str) -> None:
    assert cli.load_command_modules((name,))[name] is not None
    assert list(subcommands((name,))) == [name]


def test_every_listed_command_module_exists_and_registers() -> None:
    modules = cli.load_command_modules(cli.COMMAND_MODULES)
    assert [name for name, module in modules.items() if module is None] == []
    assert list(subcommands(cli.COMMAND_MODULES)) == [name.replace("_", "-") for name in cli.COMMAND_MODULES]


def test_main_runs_the_chosen_command_and_returns_its_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = tmp_path / "fakecommands"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hello.py").write_text(
        "def add_parser(subparsers):\n"
        "    p = subparsers.add_parser('hello')\n"
        "    p.add_argument('--code', type=int, default=0)\n"
        "    p.set_defaults(func=lambda args: print('hi', args.code) or args.code)\n"
    )
    (package / "broken.py").write_text("import no_such_dependency_for_modelplex_tests\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMAND_PACKAGE", "fakecommands")
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("hello", "not_written_yet"))

    assert cli.main(["hello", "--code", "3"]) == 3
    assert capsys.readouterr().out == "hi 3\n"

    # A module that does not exist still shows up, and says why it cannot run.
    assert cli.main(["not-written-yet"]) == 2
    assert "lacks fakecommands.not_written_yet" in capsys.readouterr().err

    # A module that exists but cannot import its own dependencies is an error, not a missing command.
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_for_modelplex_tests"):
        cli.load_command_modules(("broken",))


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


HEAVY = ("torch", "transformers", "fastapi", "uvicorn", "kopf", "starlette")


@pytest.mark.parametrize(
    "code",
    ["import modelplex", "import modelplex.cli", "import modelplex.cli; modelplex.cli.build_parser()"],
)
def test_cli_start_imports_nothing_heavy(code: str) -> None:
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_dash_m_modelplex() -> None:
    done = subprocess.run([sys.executable, "-m", "modelplex", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "validate" in done.stdout and "chat" in done.stdout
