"""The root command group, whose sub-groups are imported only when a command needs them.

`imagegate --version` or one `keys list` should not pay for the app, the job model and every backend: each
group's module is imported when it is run, and every one (backends' groups too) only when all are listed.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
import typer.main
from typer import _click as click  # the click typer 0.29 vendors: what TyperGroup's methods take and return
from typer.core import TyperGroup

# name -> (module, attribute): a Typer group, or a plain command function (`audit`), in the order --help shows.
LAZY: dict[str, tuple[str, str]] = {
    "keys": ("imagegate.cli.keys", "keys_app"),
    "jobs": ("imagegate.cli.jobs", "jobs_app"),
    "import": ("imagegate.cli.imports", "import_app"),
    "storage": ("imagegate.cli.storage", "storage_app"),
}
FIRST = {"audit": ("imagegate.cli.keys", "audit_command")}  # listed before the commands defined in cli/
GROUPS = ("keys", "jobs", "db", "import", "storage", "admin")  # the groups' order in --help


class LazyGroup(TyperGroup):
    """A Typer group that imports a sub-group's module the first time the group is asked for it."""

    _all_loaded = False
    _backend_groups: set[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backend_groups = set()

    def _load(self, name: str, module: str, attribute: str) -> None:
        target = getattr(importlib.import_module(module), attribute)
        if isinstance(target, typer.Typer):
            command: click.Command = typer.main.get_group(target)  # a group even with one command, as add_typer
        else:
            single = typer.Typer()
            single.command(name)(target)
            command = typer.main.get_command(single)  # one command and no callback: the command itself
        command.name = name
        self.add_command(command, name)

    def _load_backends(self) -> None:
        from imagegate.backends.registry import cli_command_groups

        for name, commands in cli_command_groups():  # commands backends contribute (HasCliCommands)
            if name not in self.commands:
                group = typer.main.get_group(commands)
                group.name = name
                self.add_command(group, name)
                self._backend_groups.add(name)

    def _load_all(self) -> None:
        for name, target in {**FIRST, **LAZY}.items():
            if name not in self.commands:
                self._load(name, *target)
        self._load_backends()
        ordered = sorted(self.commands.items(), key=lambda item: self._rank(item[0]))  # stable: ties keep theirs
        self.commands = dict(ordered)

    def _rank(self, name: str) -> int:
        """Where --help lists a command: audit, the commands, the groups, then the backends' groups."""
        if name in FIRST:
            return 0
        if name in self._backend_groups:
            return len(GROUPS) + 2
        return GROUPS.index(name) + 2 if name in GROUPS else 1

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command, all groups imported (for --help and completion)."""
        if not self._all_loaded:
            self._all_loaded = True
            self._load_all()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The named command, importing its module first when it is one of the lazy ones."""
        if cmd_name not in self.commands:
            known = {**FIRST, **LAZY}
            if cmd_name in known:
                self._load(cmd_name, *known[cmd_name])
            else:
                self._load_backends()
        return super().get_command(ctx, cmd_name)
