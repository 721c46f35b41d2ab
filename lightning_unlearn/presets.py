"""The shipped configs (presets): find them by short name, list, print and copy them.

Every method x scenario setting of the library exists once, as a LightningCLI YAML file installed with the package
under ``lightning_unlearn/configs``. A shipped config is named by its path relative to that folder, with or without
``.yaml``: ``quickstart``, ``mnist5k/class_removal/laf``, ``trainer/cpu``. ``lightning-unlearn fit --config NAME``
accepts such a name wherever no file of that name exists, so the presets work from any directory after a plain
``pip install``; ``lightning-unlearn configs list|show|copy`` lists, prints and copies them.
"""

from __future__ import annotations

import difflib
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CONFIG_ROOT", "config_path", "configs_command", "resolve_config_args", "shipped_configs"]

#: Folder of the shipped configs inside the installed package.
CONFIG_ROOT = Path(__file__).resolve().parent / "configs"


def shipped_configs(under: str | None = None) -> list[str]:
    """Names of the shipped configs (paths relative to :data:`CONFIG_ROOT`, without ``.yaml``), sorted.

    Args:
        under: Only the configs inside this sub-folder (e.g. ``"mnist5k/class_removal"``).
    """
    root = CONFIG_ROOT / under if under else CONFIG_ROOT
    if not root.is_dir():
        return []
    return sorted(p.relative_to(CONFIG_ROOT).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def config_path(name: str | Path) -> Path:
    """The file of the shipped config ``name`` (``"quickstart"``, ``"mnist5k/class_removal/laf.yaml"``, ...).

    Raises:
        ValueError: If no shipped config has that name (the message lists the closest names).
    """
    text = Path(name).as_posix().removeprefix("./").removeprefix("configs/")
    text = text.removesuffix(".yaml").removesuffix(".yml")
    path = CONFIG_ROOT / f"{text}.yaml"
    if path.is_file() and CONFIG_ROOT in path.resolve().parents:
        return path
    names = shipped_configs()
    close = difflib.get_close_matches(text, names, n=5, cutoff=0.4)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise ValueError(f"no shipped config named {str(name)!r}{hint}. List them with `lightning-unlearn configs list`.")


def resolve_config_args(args: Sequence[str]) -> list[str]:
    """Replace each ``--config NAME`` / ``--config=NAME`` that is not an existing file by the shipped config's path.

    A value that names an existing file, or that is neither a file nor a shipped config, is left unchanged (the
    command line then reports it).
    """
    out = list(args)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = _resolved(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + _resolved(arg.split("=", 1)[1])
    return out


def _resolved(value: str) -> str:
    if Path(value).exists() or value.lstrip().startswith(("{", "[")):
        return value
    try:
        return str(config_path(value))
    except ValueError:
        return value


_USAGE = """usage: lightning-unlearn configs list [FOLDER]      names of the shipped configs
       lightning-unlearn configs show NAME           print one
       lightning-unlearn configs copy NAME [DEST]    copy one (default: ./<file name>) to edit it
       lightning-unlearn configs path NAME           where it is installed
A NAME works directly too: lightning-unlearn fit --config NAME"""


def configs_command(argv: Sequence[str]) -> int:
    """``lightning-unlearn configs ...``: list, show, copy or locate shipped configs; returns the exit status."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_USAGE)
        return 0 if argv else 2
    action, rest = argv[0], list(argv[1:])
    try:
        if action == "list" and len(rest) <= 1:
            names = shipped_configs(rest[0] if rest else None)
            if not names:
                raise ValueError(f"no shipped configs under {rest[0]!r}")
            print("\n".join(names))
        elif action == "show" and len(rest) == 1:
            sys.stdout.write(config_path(rest[0]).read_text())
        elif action == "path" and len(rest) == 1:
            print(config_path(rest[0]))
        elif action == "copy" and len(rest) in (1, 2):
            source = config_path(rest[0])
            dest = Path(rest[1]) if len(rest) == 2 else Path(source.name)
            if dest.is_dir():
                dest = dest / source.name
            if dest.exists():
                raise ValueError(f"{dest} exists; name another destination")
            shutil.copyfile(source, dest)
            print(f"copied {source.relative_to(CONFIG_ROOT)} to {dest}")
        else:
            print(_USAGE, file=sys.stderr)
            return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
