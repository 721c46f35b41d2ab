"""Short, actionable messages for user errors: what the command line prints instead of a traceback.

:func:`user_error_message` turns an exception raised while parsing or instantiating a configuration (or while
running it) into at most a few lines that say what is allowed; :func:`load_error_reason` is the informative part
of a refused or unreadable ``torch.load``, without torch's advice to load the file unsafely.
"""

from __future__ import annotations

import argparse
import pickle
import pydoc
import re
import traceback

__all__ = ["MAX_MESSAGE_LINES", "USER_ERRORS", "load_error_reason", "user_error_message"]

#: The most lines :func:`user_error_message` returns (the command line adds none).
MAX_MESSAGE_LINES = 5

#: Exceptions that report a mistake in the user's input (configuration, arguments, files).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    pickle.UnpicklingError,
    argparse.ArgumentError,
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KEY = r'Parser key "([^"]+)":?'
_LINE_WIDTH = 400
#: Messages of jsonargparse that only wrap the real error (the real one is their cause, or listed below them).
_WRAPPERS = ("Does not validate against any of the Union subtypes", "Problem with given class_path")
#: Lines of jsonargparse messages that add nothing the user acts on.
_NOISE = re.compile(r"^\s*(-\s*)?(Subtypes:|Errors:|Given value type:|Given value:|Expected a <class 'NoneType'>)")
#: Sentences of torch's ``weights_only`` refusal that advise loading the file in an unsafe way.
_UNSAFE_ADVICE = (
    "This file can still be loaded",
    "Re-running `torch.load`",
    "Please use `torch.serialization.add_safe_globals",
    "Check the documentation of torch.load",
)


def load_error_reason(error: BaseException) -> str:
    """The informative part of a ``torch.load(weights_only=True)`` failure, on one line.

    For a refused file, the unsupported global (``GLOBAL builtins.exec was not an allowed global``); for other
    failures, the first line of the error. torch's advice to load the file with ``weights_only=False`` or to allow
    its globals (both would run whatever the file holds) is removed.
    """
    text = _ANSI.sub("", str(error)).strip()
    for line in text.splitlines():
        if ("Unsupported" in line and "GLOBAL" in line) or "Unsupported operand" in line:
            reason = line.strip().removeprefix("WeightsUnpickler error:").strip()
            return _cut_advice(reason) or type(error).__name__
    first = text.splitlines()[0].strip() if text else ""
    return _cut_advice(first) or type(error).__name__


def _cut_advice(text: str) -> str:
    for marker in _UNSAFE_ADVICE:
        text = text.split(marker)[0]
    text = text.strip()
    return "" if "weights_only" in text and "False" in text else text


def user_error_message(error: BaseException, command: str | None = None) -> str | None:
    """At most :data:`MAX_MESSAGE_LINES` lines explaining ``error``, or ``None`` when it is not a user error.

    - jsonargparse parse errors (``ArgumentError``: unknown key, wrong type, unknown class, missing config file)
      keep their key message without the nested dumps of union subtypes;
    - an error raised while instantiating a class from the configuration is reported by its own message (the
      library's ``ValueError`` saying what is allowed), not by jsonargparse's wrapper around it;
    - a refused or unreadable checkpoint names the file, without torch's unsafe-loading advice.

    Args:
        error: The exception.
        command: The command that failed (``"lightning-unlearn fit"``), named in a hint on where to see the
            accepted arguments.
    """
    chain = _chain(error)
    if not any(isinstance(e, USER_ERRORS) for e in chain):
        return None
    chosen = error if isinstance(error, argparse.ArgumentError) else _most_specific(chain)
    if chosen is None:
        return None
    hint = "(run with --debug or LIGHTNING_UNLEARN_DEBUG=1 for the full traceback)"
    if isinstance(chosen, argparse.ArgumentError):
        lines, class_path, key = _argument_error_lines(str(chosen))
        if command and class_path and key and pydoc.locate(class_path) is not None:
            name = class_path.rpartition(".")[2]
            hint = f"(the arguments of {name}: `{command} --{key}.help {name}`)"
        elif command and key in ("model", "data"):
            hint = f"(`{command} --help` lists the known {'methods' if key == 'model' else 'datamodules'})"
        elif command:
            hint = f"(`{command} --help` lists the accepted arguments)"
    elif isinstance(chosen, pickle.UnpicklingError):
        lines = [f"cannot load a file: {load_error_reason(chosen)}"]
    else:
        lines = _clean_lines(str(chosen))
    if not lines:
        lines = [type(chosen).__name__]
    lines = [f"error: {lines[0]}", *lines[1:]][: MAX_MESSAGE_LINES - 1]
    lines.append(hint)
    return "\n".join(line if len(line) <= _LINE_WIDTH else line[: _LINE_WIDTH - 3] + "..." for line in lines)


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and its causes (explicit ``from``, else the implicit context), outermost first."""
    out: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return out


def _most_specific(chain: list[BaseException]) -> BaseException | None:
    """The outermost user error that is not a jsonargparse wrapper of another error."""
    candidates = [e for e in chain if isinstance(e, USER_ERRORS)]
    for candidate in candidates:
        if _is_wrapper(candidate) and candidate is not candidates[-1]:
            continue
        return candidate
    return candidates[-1] if candidates else None


def _is_wrapper(error: BaseException) -> bool:
    text = str(error)
    if any(text.startswith(w) for w in _WRAPPERS):
        return True
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ is not None else []
    # raised by jsonargparse itself while instantiating (its message restates the inner one)
    return bool(frames) and "jsonargparse" in frames[-1].filename and error.__cause__ is not None


def _argument_error_lines(text: str) -> tuple[list[str], str | None, str | None]:
    """A jsonargparse parse error as ``key: reason`` lines, the class path it was about and the top-level key.

    jsonargparse nests the reason under ``Parser key "model":`` / ``Problem with given class_path '...'`` /
    ``Parser key "lr":`` lines and union dumps; the keys are joined into one dotted name.
    """
    text = _ANSI.sub("", text)
    keys = re.findall(_KEY, text)
    paths = re.findall(r"Problem with given class_path '([^']+)'", text)
    reasons = [line.strip().removeprefix("- ").strip() for line in _clean_lines(re.sub(_KEY, "", text))]
    reasons = [r for r in reasons if r and not r.startswith("Problem with given class_path")]
    if len(reasons) > 1:  # the failed reading of the value as a config file, when it was meant as a class
        reasons = [r for r in reasons if not re.match(r"Expected a path but .* either not accessible", r)] or reasons
    if keys and reasons:
        lines = [f'key "{".".join(keys)}": {reasons[0]}', *(f"  {r}" for r in reasons[1:])]
    elif keys:
        lines = [f'key "{".".join(keys)}" is not valid']
    else:
        lines = reasons
    return lines, (paths[0] if paths else None), (keys[0] if keys else None)


def _clean_lines(text: str) -> list[str]:
    """The message's lines without jsonargparse's union dumps, blank lines and unsafe-loading advice."""
    lines: list[str] = []
    for raw in _ANSI.sub("", text).splitlines():
        line = raw.rstrip()
        body = line.strip().removeprefix("- ").strip()
        if not body or _NOISE.match(line) or body.startswith(_WRAPPERS):
            continue
        if "weights_only" in line and "False" in line:
            line = _cut_advice(line)
            if not line:
                continue
        if line.lstrip().startswith("- "):
            line = "  " + line.strip()
        lines.append(line)
    return lines
