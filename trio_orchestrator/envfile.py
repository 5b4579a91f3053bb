"""A bot's ``env_file:``: ``KEY=VALUE`` lines read as python-dotenv reads them.

Pure and synchronous: the runner calls :func:`read_env_file` in a worker thread before
every start. The grammar follows python-dotenv's parser (``dotenv/parser.py``):

- blank lines and ``# comments`` are skipped; ``export KEY=value`` is ``KEY=value``;
- unquoted values lose surrounding blanks and a trailing `` # comment`` (a ``#`` with
  blanks before it); ``KEY=a#b`` keeps the ``#``;
- ``'single quotes'`` are literal but for ``\\'`` and ``\\\\``;
- ``"double quotes"`` decode ``\\n \\t \\r \\" \\' \\\\ \\a \\b \\f \\v`` and may span lines;
- ``KEY=`` is the empty string; a bare ``KEY`` (no ``=``) sets nothing.

Two deliberate differences: a line python-dotenv would skip with a warning is an error
here (a typo in a secrets file should stop the bot, not start it without the secret), and
``${VAR}`` is not expanded (python-dotenv's ``interpolate=False``).

Error messages name the file, the line number and the key, never a value: env files hold
secrets, and these messages reach the manager's log.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from trio_orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["MAX_ENV_FILE_BYTES", "EnvFileError", "parse_env_file", "read_env_file"]

# An env file is a handful of lines; anything this big is a mistake (a log, a binary).
MAX_ENV_FILE_BYTES = 1024 * 1024

# The grammar of python-dotenv, piece by piece, in the order a line is read:
# blanks, [export] KEY, blanks, =, VALUE, [# comment], end of line.
_NEWLINE = re.compile(r"\r\n|\n|\r")
_MULTILINE_SPACE = re.compile(r"\s*")
_EXPORT = re.compile(r"(?:export[^\S\r\n]+)?")
_SINGLE_QUOTED_KEY = re.compile(r"'([^']+)'")
_UNQUOTED_KEY = re.compile(r"([^=\#\s]+)")
_SPACE = re.compile(r"[^\S\r\n]*")
_EQUAL_SIGN = re.compile(r"=[^\S\r\n]*")
# A quoted value, by its quote: the value up to the closing quote, and the escapes it knows.
_QUOTED_VALUES = {
    "'": (re.compile(r"'((?:\\.|[^'\\])*)'", re.DOTALL), re.compile(r"\\[\\']")),
    '"': (re.compile(r'"((?:\\.|[^"\\])*)"', re.DOTALL), re.compile(r"\\[\\'\"abfnrtv]")),
}
_UNQUOTED_VALUE = re.compile(r"[^\r\n]*")
_INLINE_COMMENT = re.compile(r"\s+#.*")
_COMMENT = re.compile(r"(?:[^\S\r\n]*#[^\r\n]*)?")
_END_OF_LINE = re.compile(r"[^\S\r\n]*(?:\r\n|\n|\r|$)")
_ESCAPES = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}


class EnvFileError(OrchestratorError):
    """An env file is missing, unreadable or not in ``KEY=VALUE`` form.

    The message is ``env file <path>: <why>`` and never quotes a value.
    """


class _Invalid(Exception):
    """A line that does not parse; the message says what was expected."""


class _Reader:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def read(self, regex: re.Pattern[str], expected: str) -> re.Match[str]:
        match = regex.match(self.text, self.pos)
        if match is None:
            raise _Invalid(expected)
        self.pos = match.end()
        return match

    def line(self) -> int:
        return len(_NEWLINE.findall(self.text, 0, self.pos)) + 1


def _unescape(regex: re.Pattern[str], value: str) -> str:
    return regex.sub(lambda match: _ESCAPES[match.group(0)[1]], value)


def _value(reader: _Reader, key: str) -> str:
    char = reader.peek()
    if char in _QUOTED_VALUES:
        value, escapes = _QUOTED_VALUES[char]
        match = reader.read(value, f"a closing {char} for the value of {key!r}")
        return _unescape(escapes, match.group(1))
    if char in ("", "\n", "\r"):
        return ""
    raw = reader.read(_UNQUOTED_VALUE, "a value").group(0)
    return _INLINE_COMMENT.sub("", raw).rstrip()


def _binding(reader: _Reader) -> tuple[str, str | None] | None:
    """One ``KEY=VALUE`` (or comment) at the reader's position, blanks before it skipped.

    Returns None for a comment, ``(key, None)`` for a bare key.
    """
    reader.read(_EXPORT, "")
    key: str | None
    if reader.peek() == "#":
        key = None
    elif reader.peek() == "'":
        key = reader.read(_SINGLE_QUOTED_KEY, "a closing ' after the key").group(1)
    else:
        key = reader.read(_UNQUOTED_KEY, "a KEY before '='").group(1)
    reader.read(_SPACE, "")
    value = None
    if key is not None and reader.peek() == "=":
        equal_sign = reader.read(_EQUAL_SIGN, "'='").group(0)
        # `KEY= # note` is empty with a comment; `KEY=#x` is the value "#x".
        value = "" if len(equal_sign) > 1 and reader.peek() == "#" else _value(reader, key)
    reader.read(_COMMENT, "")
    where = f" after {key!r}" if key is not None else ""
    reader.read(_END_OF_LINE, f"'=' or the end of the line{where}")
    return None if key is None else (key, value)


def parse_env_file(text: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines; later lines win over earlier ones.

    Raises:
        ValueError: a line does not parse; the message names the line number (and the
            key, when one was read), never the value.
    """
    reader = _Reader(text.removeprefix("\ufeff"))
    values: dict[str, str] = {}
    while True:
        reader.read(_MULTILINE_SPACE, "")
        if reader.at_end():
            return values
        line = reader.line()
        try:
            binding = _binding(reader)
        except _Invalid as exc:
            raise ValueError(f"line {line}: expected {exc}") from None
        if binding is None or binding[1] is None:
            continue
        key, value = binding
        if "=" in key or "\0" in key:
            raise ValueError(f"line {line}: {key!r} is not a valid variable name")
        if "\0" in value:
            raise ValueError(f"line {line}: the value of {key!r} holds a NUL character")
        values[key] = value


def read_env_file(path: Path) -> dict[str, str]:
    """Read and parse the env file at *path* (UTF-8, as python-dotenv reads it).

    Raises:
        EnvFileError: missing, unreadable, too large, not UTF-8, or a line that does not
            parse: ``env file <path>: <why>``.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_ENV_FILE_BYTES + 1)
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
        raise EnvFileError(f"env file {path}: {why}") from None
    if len(data) > MAX_ENV_FILE_BYTES:
        raise EnvFileError(f"env file {path}: larger than {MAX_ENV_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvFileError(f"env file {path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return parse_env_file(text)
    except ValueError as exc:
        raise EnvFileError(f"env file {path}: {exc}") from None
