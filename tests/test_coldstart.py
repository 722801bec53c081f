"""Cold start: what a NEW process imports to run `blackboard read` (a shell agent pays it every step).

No timing here (timings are for bench/, on a quiet machine): these tests pin the imports that cost
the time. `import blackboard.cli` and `blackboard read` must not import the heavy or needless
modules below, the lazy group must import only the module of the command that runs, and its table
of commands (`blackboard.cli.base.COMMANDS`) must match the commands themselves.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from importlib import import_module
from pathlib import Path
from typing import NamedTuple

import click
import pytest
from click.testing import CliRunner

import blackboard.cli
from blackboard import Board
from blackboard.cli import cli
from blackboard.cli.base import COMMANDS

#: Modules no command on the read path needs; each costs a new process milliseconds to tens of them.
NOT_ON_THE_READ_PATH = ["pydantic", "watchfiles", "filelock", "asyncio", "logging", "subprocess"]
#: json is on every path: orjson imports it (its JSONDecodeError subclasses json's). What can be
#: checked is that nothing of ours imports it first (codec.parse_user_json imports it when called).

#: Runs in a fresh interpreter: the CLI as the console script runs it, then the modules it imported,
#: written to the file named by argv[1] (stdout is the command's). It imports nothing itself.
PROBE = """
import sys
out, argv = sys.argv[1], sys.argv[2:]
code = 0
if argv == ["--import-only"]:
    import blackboard.cli
else:
    sys.argv = ["blackboard", *argv]
    from blackboard.cli.app import main
    try:
        main()
    except SystemExit as exc:
        code = exc.code
with open(out, "w") as f:
    f.write("\\n".join([str(code), *sorted(sys.modules)]))
"""


class Imports(NamedTuple):
    modules: set[str]
    #: module -> the module whose import first imported it (None: the probe itself), from -X importtime
    importer: dict[str, str | None]


def imported_by(tmp_path: Path, *argv: str) -> Imports:
    """What a new process has imported once it ran `blackboard ARGV...` (or only imported the CLI)."""
    out = tmp_path / "modules.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", PROBE, str(out), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr[-3000:])
    code, *modules = out.read_text().splitlines()
    assert code == "0", (code, proc.stdout, proc.stderr[-3000:])
    return Imports(set(modules), importers(proc.stderr))


def importers(report: str) -> dict[str, str | None]:
    """From `-X importtime` lines (`import time: SELF | CUMULATIVE | <indent>name`, each module after
    the modules its import pulled in): who imported each module, i.e. the next line indented less."""
    rows: list[tuple[int, str]] = []
    for line in report.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[0].strip().isdigit():
            name = fields[2].rstrip()
            rows.append((len(name) - len(name.lstrip()), name.strip()))
    out: dict[str, str | None] = {}
    for i, (depth, name) in enumerate(rows):
        out.setdefault(name, next((parent for d, parent in rows[i + 1 :] if d < depth), None))
    return out


@pytest.fixture(scope="module")
def tiny_board(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("coldstart") / "board"
    with Board.init(path) as board:
        board.write("k", {"v": 1})
    return path


@pytest.fixture(scope="module")
def import_only(tmp_path_factory: pytest.TempPathFactory) -> Imports:
    return imported_by(tmp_path_factory.mktemp("import"), "--import-only")


@pytest.fixture(scope="module")
def read(tmp_path_factory: pytest.TempPathFactory, tiny_board: Path) -> Imports:
    return imported_by(tmp_path_factory.mktemp("read"), "--board", str(tiny_board), "read", "k")


@pytest.fixture(scope="module")
def after_import(import_only: Imports) -> set[str]:
    assert "blackboard.cli" in import_only.modules
    return import_only.modules


@pytest.fixture(scope="module")
def after_read(read: Imports) -> set[str]:
    assert "blackboard.cli.commands" in read.modules  # the probe did run the read command
    return read.modules


def _loaded(modules: set[str], name: str) -> bool:
    return name in modules or any(m.startswith(name + ".") for m in modules)


@pytest.mark.parametrize("module", NOT_ON_THE_READ_PATH)
def test_import_blackboard_cli_does_not_import(after_import: set[str], module: str) -> None:
    assert not _loaded(after_import, module)


@pytest.mark.parametrize("module", NOT_ON_THE_READ_PATH)
def test_blackboard_read_does_not_import(after_read: set[str], module: str) -> None:
    assert not _loaded(after_read, module)


@pytest.mark.parametrize("probe", ["import_only", "read"])
def test_only_orjson_imports_json(request: pytest.FixtureRequest, probe: str) -> None:
    imports: Imports = request.getfixturevalue(probe)
    assert "orjson" in imports.modules
    assert imports.importer.get("json") in ("orjson", "orjson.orjson"), imports.importer.get("json")


def test_read_path_modules_that_are_replaced_by_cheaper_calls(after_read: set[str]) -> None:
    # socket/getpass: os.uname() and the environment name the author; uuid would come from orjson
    # anyway, but the layout's temporary names do not need it.
    for module in ("socket", "getpass", "shutil", "textwrap", "difflib"):
        assert module not in after_read, module
    # xxhash is on the read path, and rightly: a read verifies every line's checksum (spec 5.6), and
    # its import is cheap (~1.6 ms, see pyproject.toml).
    assert "xxhash" in after_read


def command_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(blackboard.cli.__path__))


def test_read_imports_only_its_own_command_module(after_read: set[str], after_import: set[str]) -> None:
    loaded = {m.removeprefix("blackboard.cli.") for m in after_read if m.startswith("blackboard.cli.")}
    assert loaded == {"app", "base", "commands"}
    assert {m for m in after_import if m.startswith("blackboard.cli.")} == {"blackboard.cli.app", "blackboard.cli.base"}


def test_help_lists_every_command_without_importing_one(tmp_path: Path) -> None:
    modules = imported_by(tmp_path, "--help").modules
    lazy = {f"blackboard.cli.{module}" for module, _ in COMMANDS.values()}
    assert not lazy & modules, lazy & modules


# -- the lazy group's table ------------------------------------------------------------------------


def real_commands() -> dict[str, tuple[str, click.Command]]:
    """Every click command defined in a blackboard.cli module: name -> (module, command)."""
    found: dict[str, tuple[str, click.Command]] = {}
    for module in command_modules():
        namespace = vars(import_module(f"blackboard.cli.{module}"))
        for value in namespace.values():
            # A command defined in this module (not one imported into it), other than the group.
            defined_here = getattr(getattr(value, "callback", None), "__module__", None) == f"blackboard.cli.{module}"
            if isinstance(value, click.Command) and value is not cli and defined_here:
                assert value.name is not None
                found[value.name] = (module, value)
    return found


def test_the_table_names_every_command_and_its_module() -> None:
    real = real_commands()
    assert set(COMMANDS) == set(real)
    for name, (module, _) in real.items():
        assert COMMANDS[name][0] == module, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_holds_each_commands_short_help(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None and command.name == name
    assert COMMANDS[name][1] == command.get_short_help_str(limit=10_000)


def test_help_shows_the_short_help_click_would() -> None:
    """The group's help, from the table, is what click's own listing (importing every command) shows."""
    out = CliRunner().invoke(cli, ["--help"], prog_name="blackboard", terminal_width=200).output
    eager = click.Group(commands={name: command for name, (_, command) in real_commands().items()})
    with click.Context(eager, terminal_width=200) as ctx:
        formatter = ctx.make_formatter()
        eager.format_commands(ctx, formatter)
    assert formatter.getvalue() in out
    for name in COMMANDS:
        assert f"  {name} " in out, name


def test_an_unknown_command_is_a_usage_error_with_a_suggestion() -> None:
    result = CliRunner().invoke(cli, ["raed"], prog_name="blackboard")
    assert result.exit_code == 2
    assert "No such command 'raed'" in result.output
    if getattr(click.exceptions, "NoSuchCommand", None) is not None:  # click >= 8.4 suggests
        assert "read" in result.output.split("No such command")[1]


def test_every_package_of_the_source_tree_is_installed() -> None:
    """pyproject lists the packages by hand: a new subpackage it forgets is missing from a wheel."""
    import tomllib

    root = Path(__file__).parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "blackboard").rglob("*.py")}
    assert listed == found
