"""The study file's schema: every key known, every value of its type, and names that are safe where they go.

A study's name becomes file names in the cache (``results/<name>.parquet``, ``analyses/<name>/``), a group
name is joined by '+' in ``--groups`` and by ',' in the app's links, a model name is joined by ',' in
``--models``: each is checked here, so that a typo or a hostile value stops with one line naming the file,
the key and the fix, before anything is read or written.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path

from .errors import InputError, missing_file

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a file name on any system, no path, not hidden
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+@-]{0,99}")  # never a path; no ',' (the --models separator)
RESERVED_GROUPS = ("all",)  # `--groups all` means every group

MODEL_METADATA = ("architecture", "family", "epochs", "linear_acc", "network", "layer")  # shown by the views
TOP_LEVEL = {"name": str, "images": str, "base_group": str, "concepts": dict, "models": dict}
CONCEPTS = {"table": str, "tables": list, "matrix": str, "names": str}
MODEL = {
    "features": str,
    "assignments": str,
    "key": str,
    "architecture": str,
    "family": str,
    "network": str,
    "epochs": int,
    "layer": int,
    "linear_acc": float,
    "source": dict,  # where the features came from (weights, their sha256, a seed): kept as written
}
TYPE_NAMES = {str: "a string", dict: "a table", list: "a list of strings", int: "an integer", float: "a number"}


def read_study_file(path: Path) -> dict:
    """The study file's contents, checked against the schema; ``InputError`` names the first problem."""
    if not path.is_file():
        raise missing_file(path, what="study file", fix="pass the path of a study .toml file")
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid TOML ({exc})", where=path, fix="correct the study file's syntax") from None
    _check_keys(spec, TOP_LEVEL, path, "")
    for required in ("images", "concepts", "models"):
        if required not in spec:
            raise InputError(f"missing `{required}`", where=path, fix="see the study file format in the README")
    check_study_name(spec.get("name", path.stem), where=path)
    if "base_group" in spec:
        check_group_name(spec["base_group"], where=path)
    _check_keys(spec["concepts"], CONCEPTS, path, "concepts.")
    forms = [
        form for form in (("table",), ("tables",), ("matrix", "names")) if any(k in spec["concepts"] for k in form)
    ]
    if len(forms) != 1 or not all(k in spec["concepts"] for k in forms[0]):
        raise InputError(
            "[concepts] needs exactly one of `table`, `tables`, or `matrix` with `names`",
            where=path,
            fix='e.g. table = "concepts.parquet"',
        )
    tables = spec["concepts"].get("tables")
    if tables is not None and (not tables or not all(isinstance(t, str) for t in tables)):
        raise InputError(
            "`concepts.tables` must be a non-empty list of file names", where=path, fix='tables = ["a.parquet"]'
        )
    if not spec["models"]:
        raise InputError("the study has no models", where=path, fix="add at least one [models.NAME] table")
    for name, entry in spec["models"].items():
        check_model_name(name, where=path)
        if not isinstance(entry, dict):
            raise InputError(
                f"`models.{name}` is {_type_name(entry)}, not a table",
                where=path,
                fix=f'write it as a table: [models.{name}] with features = "..."',
            )
        _check_keys(entry, MODEL, path, f"models.{name}.")
        if ("features" in entry) == ("assignments" in entry):
            raise InputError(
                f"model {name!r} needs exactly one of `features` and `assignments`",
                where=path,
                fix=f'add features = "path/to/{name}.npy" under [models.{name}]',
            )
    return spec


def check_study_name(name, *, where) -> None:
    _check_name(
        name,
        SAFE_NAME,
        where=where,
        problem=f"study name {name!r} cannot name files in the cache",
        fix="use up to 100 letters, digits, '.', '_' and '-', starting with a letter or digit "
        '(e.g. name = "imagenet-val")',
    )


def check_group_name(name, *, where) -> None:
    reserved = name in RESERVED_GROUPS if isinstance(name, str) else False
    _check_name(
        name,
        SAFE_NAME,
        where=where,
        problem=f"concept group name {name!r} cannot be used"
        + (": `all` means every group" if reserved else " in --groups (a+b) and links"),
        fix="rename the group: up to 100 letters, digits, '.', '_' and '-', starting with a letter or digit",
        reserved=reserved,
    )


def check_model_name(name, *, where) -> None:
    _check_name(
        name,
        MODEL_NAME,
        where=where,
        problem=f"model name {name!r} cannot be used in --models (a,b) and links",
        fix="rename the [models.NAME] table: up to 100 letters, digits and '.', '_', '-', ':', '+', '@', "
        "starting with a letter or digit",
    )


def _check_name(name, pattern: re.Pattern, *, where, problem: str, fix: str, reserved: bool = False) -> None:
    if reserved or not isinstance(name, str) or not pattern.fullmatch(name):
        raise InputError(problem, where=where, fix=fix)


def _check_keys(table, schema: dict, path: Path, prefix: str) -> None:
    """Unknown keys (with the closest known one) and values of the wrong type."""
    if not isinstance(table, dict):
        raise InputError(
            f"`{prefix.rstrip('.')}` is {_type_name(table)}, not a table",
            where=path,
            fix=f"write [{prefix.rstrip('.')}] as a table",
        )
    for key, value in table.items():
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            raise InputError(
                f"unknown key `{prefix}{key}`" + (f" (did you mean `{close[0]}`?)" if close else ""),
                where=path,
                fix=f"use the known keys of {'the study file' if not prefix else prefix.rstrip('.')}: "
                + ", ".join(schema),
            )
        expected = schema[key]
        if not _has_type(value, expected):
            raise InputError(
                f"`{prefix}{key}` is {_type_name(value)}, expected {TYPE_NAMES[expected]}",
                where=path,
                fix=f"write {prefix}{key} as {TYPE_NAMES[expected]}",
            )


def _has_type(value, expected: type) -> bool:
    if isinstance(value, bool):  # TOML's true/false are no numbers or strings here
        return False
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


def _type_name(value) -> str:
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}
    return next((text for kind, text in names.items() if isinstance(value, kind)), type(value).__name__)
