"""The reference docs follow the code (datasette's docs tests): every protocol key is in
``docs/protocols.md`` with its true default, and every command, argument and option of the
``cytocompare`` command line is in ``docs/cli.md``.

Both walks start from the code (the pydantic models' ``model_fields``, the click group), so a
new key or option fails here until it is documented, and a documented one that no longer exists
fails too.
"""

from __future__ import annotations

import collections.abc
import re
import types
import typing
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from cytocompare.cli import cli
from cytocompare.config import Protocol

DOCS = Path(__file__).resolve().parents[1] / "docs"
PLACEHOLDER = "<name>"  # a path segment for the keys of a mapping the user names (splits, methods)


# ---------------------------------------------------------------------------- protocol keys
def _models_in(annotation: Any) -> tuple[list[type[BaseModel]], bool, str | None]:
    """The pydantic models inside a field's annotation, whether they sit under a mapping
    (``dict[str, Model]``: the user names the keys), and the discriminator of a tagged union (a
    key every member must be given, whatever default the member model declares). Follows
    Optional, unions, Annotated, list/tuple and dict."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation], False, None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        models, mapped, tag = _models_in(args[0])
        tags = [m.discriminator for m in args[1:] if isinstance(getattr(m, "discriminator", None), str)]
        return models, mapped, tags[0] if tags else tag
    if isinstance(origin, type) and issubclass(origin, collections.abc.Mapping):
        models, _, tag = _models_in(args[1]) if len(args) == 2 else ([], False, None)
        return models, bool(models), tag
    if origin in (typing.Union, types.UnionType, list, tuple, set, frozenset):
        found: list[type[BaseModel]] = []
        mapped, direct, tag = False, False, None
        for arg in args:
            models, under_mapping, inner_tag = _models_in(arg)
            found += [m for m in models if m not in found]
            mapped, tag = mapped or under_mapping, tag or inner_tag
            direct = direct or (bool(models) and not under_mapping)
        # one model both as the value and as a mapping's values (test_data: one set, or named
        # sets of the same keys): its keys are documented once, by their direct paths
        return found, mapped and not direct, tag
    return [], False, None


def _default_of(field: Any) -> Any:
    """A field's default as a protocol file would spell it; PydanticUndefined when required."""
    if field.is_required():
        return PydanticUndefined
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return value
    return yaml.safe_load(yaml.safe_dump(_plain(value)))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def protocol_keys(model: type[BaseModel] = Protocol, prefix: str = "", tag: str | None = None) -> dict[str, list[Any]]:
    """Every key a protocol file can hold, as a dotted path (``methods.<name>.classifier.params``),
    with the default(s) the models give it (several where union members share a key). ``tag``:
    the discriminator key of the union ``model`` is a member of (required in a protocol file)."""
    keys: dict[str, list[Any]] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        keys.setdefault(path, []).append(PydanticUndefined if name == tag else _default_of(field))
        models, under_mapping, inner_tag = _models_in(field.annotation)
        inner = f"{path}.{PLACEHOLDER}." if under_mapping else f"{path}."
        for sub in models:
            for sub_path, defaults in protocol_keys(sub, inner, inner_tag).items():
                keys.setdefault(sub_path, []).extend(defaults)
    return keys


def _reference_table(text: str) -> dict[str, str]:
    """``docs/protocols.md``'s key reference: documented path -> its default cell.

    The reference is every table whose header starts ``| key | default |``; a row's first cell
    holds one or more backticked dotted paths that share the row's default."""
    rows: dict[str, str] = {}
    in_table = False
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else None
        if cells is None:
            in_table = False
            continue
        if cells[:2] == ["key", "default"]:
            in_table = True
            continue
        if not in_table or set(cells[0]) <= set("-: "):
            continue
        for path in re.findall(r"`([^`]+)`", cells[0]):
            assert path not in rows, f"docs/protocols.md documents `{path}` twice"
            rows[path] = cells[1]
    return rows


def _default_matches(cell: str, default: Any) -> bool:
    """``required`` for a required key; a backticked YAML value equal to the default; free text
    only for a default computed at run time (None) or a nested section (its keys have rows)."""
    if default is PydanticUndefined:
        return cell == "required"
    spelled = re.findall(r"`([^`]*)`", cell)
    if not spelled:
        return cell != "required" and (default is None or isinstance(default, BaseModel))
    return yaml.safe_load(spelled[0]) == (default.model_dump(mode="json") if isinstance(default, BaseModel) else default)


@pytest.fixture(scope="module")
def documented_keys() -> dict[str, str]:
    return _reference_table((DOCS / "protocols.md").read_text())


def test_walker_sees_nested_and_union_keys():
    # the walk itself must reach every level, or the docs test below would pass vacuously
    keys = protocol_keys()
    for path in ("name", "data.path", "test_data.colour_normalize", "splits.<name>.kind",
                 "splits.<name>.n_splits", "splits.<name>.test_size", "methods.<name>.classifier.params",
                 "methods.<name>.selector.name", "tolerance.pairs", "evaluation.no_call_classes"):
        assert path in keys, path
    assert len(keys) > 40


@pytest.mark.parametrize("path", sorted(protocol_keys()))
def test_protocol_key_is_documented(path: str, documented_keys: dict[str, str]):
    assert path in documented_keys, f"protocol key `{path}` is missing from the key table of docs/protocols.md"
    cell = documented_keys[path]
    defaults = protocol_keys()[path]
    assert any(_default_matches(cell, d) for d in defaults), (
        f"docs/protocols.md gives `{path}` the default {cell!r}; the code's: "
        + ", ".join("required" if d is PydanticUndefined else repr(d) for d in defaults))


def test_no_documented_key_is_stale(documented_keys: dict[str, str]):
    stale = sorted(set(documented_keys) - set(protocol_keys()))
    assert not stale, f"docs/protocols.md documents keys the protocol no longer has: {stale}"


# ---------------------------------------------------------------------------- the command line
def commands(group: click.Group = cli, prefix: str = "cytocompare") -> dict[str, click.Command]:
    """Every command (and the group itself) by its full invocation, e.g. ``cytocompare run``."""
    found: dict[str, click.Command] = {prefix: group}
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            found |= commands(command, f"{prefix} {name}")
        else:
            found[f"{prefix} {name}"] = command
    return found


def _sections(text: str) -> dict[str, str]:
    """``docs/cli.md`` split at its ``## `cytocompare ...` `` headings."""
    parts = re.split(r"^## `([^`]+)`\s*$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def parameter_words(command: click.Command) -> list[str]:
    """What the docs must name for a command: each argument's metavar, each option's flags,
    and the choices of a choice-valued option."""
    words = []
    for param in command.params:
        if isinstance(param, click.Argument):
            words.append(param.human_readable_name)
        else:
            words += [*param.opts, *param.secondary_opts]
        if isinstance(param.type, click.Choice):
            words += [str(c) for c in param.type.choices]
    return words


@pytest.fixture(scope="module")
def cli_sections() -> dict[str, str]:
    return _sections((DOCS / "cli.md").read_text())


def test_walker_sees_every_command():
    found = commands()
    assert {"cytocompare", "cytocompare run", "cytocompare validate", "cytocompare list"} <= set(found)
    assert "--output" in parameter_words(found["cytocompare run"])
    assert "classifier" in parameter_words(found["cytocompare list"])  # a choice


@pytest.mark.parametrize("name", sorted(commands()))
def test_command_and_its_options_are_documented(name: str, cli_sections: dict[str, str]):
    assert name in cli_sections, f"docs/cli.md has no section ## `{name}`"
    section = cli_sections[name]
    missing = [w for w in parameter_words(commands()[name])
               if not re.search(rf"`[^`]*(?<![\w-]){re.escape(w)}(?![\w-])[^`]*`", section)]
    assert not missing, f"docs/cli.md, section `{name}`, does not name (in backticks): {missing}"


def test_no_documented_command_is_stale(cli_sections: dict[str, str]):
    stale = sorted(set(cli_sections) - set(commands()))
    assert not stale, f"docs/cli.md documents commands that do not exist: {stale}"
