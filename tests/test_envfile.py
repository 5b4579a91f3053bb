"""env_file parsing: the results python-dotenv 1.x gives for the same text
(``dotenv_values(stream=..., interpolate=False)``), written out here."""

from __future__ import annotations

import os
import re

import pytest

from trio_orchestrator.envfile import EnvFileError, parse_env_file, read_env_file


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1", {"A": "1"}),
        ("A=1\nB=2\n", {"A": "1", "B": "2"}),
        ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
        ("\ufeffA=1", {"A": "1"}),
        ("# a comment\n\n   \nA=1\n  # indented comment\n", {"A": "1"}),
        ("export A=1", {"A": "1"}),
        ("export  A = 1 ", {"A": "1"}),
        ("  A=1", {"A": "1"}),
        # unquoted: blanks trimmed, ` # comment` cut, a `#` without blanks kept
        ("A= spaced value  ", {"A": "spaced value"}),
        ("A=a b c  # note", {"A": "a b c"}),
        ("A=a#b", {"A": "a#b"}),
        ("A=#x", {"A": "#x"}),
        ("A= # only a note", {"A": ""}),
        ("A=a\tb", {"A": "a\tb"}),
        ("A=\\n", {"A": "\\n"}),
        ("A=$HOME", {"A": "$HOME"}),
        ("A=é€", {"A": "é€"}),
        # empty values; a bare key sets nothing
        ("A=", {"A": ""}),
        ('A=""', {"A": ""}),
        ("A=''", {"A": ""}),
        ("A", {}),
        ("export A", {}),
        ("A # note", {}),
        # single quotes: literal, but for \' and \\
        ("A='x y # z'", {"A": "x y # z"}),
        ("A='a\\'b'", {"A": "a'b"}),
        ("A='a\\nb'", {"A": "a\\nb"}),
        ("A='a\\\\b'", {"A": "a\\b"}),
        # double quotes: escapes, comments after, several lines
        ('A="a\\nb"', {"A": "a\nb"}),
        ('A="a\\tb\\"c\\\\d"', {"A": 'a\tb"c\\d'}),
        ('A="\\x"', {"A": "\\x"}),
        ('A="x" # note', {"A": "x"}),
        ('A = "q"', {"A": "q"}),
        ('A="line1\nline2"\nB=2', {"A": "line1\nline2", "B": "2"}),
        ("A=1\nA=2", {"A": "2"}),
        ("'K'=v", {"K": "v"}),
    ],
)
def test_parse_like_python_dotenv(text, expected):
    assert parse_env_file(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("A=1\nA B\n", "line 2: expected '=' or the end of the line after 'A'"),
        ("=x", "line 1: expected a KEY before '='"),
        ('A=1\n\nB="x\n', "line 3: expected a closing \" for the value of 'B'"),
        ("A='x", "line 1: expected a closing ' for the value of 'A'"),
        ('A="x" y', "line 1: expected '=' or the end of the line after 'A'"),
        ('A="a"\nB="two\nlines"\nC D', "line 4"),
    ],
)
def test_invalid_lines_name_the_line(text, words):
    with pytest.raises(ValueError, match=r"^line") as info:
        parse_env_file(text)
    assert words in str(info.value)


def test_errors_never_quote_the_value():
    with pytest.raises(ValueError) as info:
        parse_env_file('TOKEN="s3cr3t-value\n')
    assert "s3cr3t" not in str(info.value)
    assert "'TOKEN'" in str(info.value)


def test_nul_characters_are_refused():
    with pytest.raises(ValueError, match="NUL"):
        parse_env_file("A=x\0y")


def test_read_env_file(tmp_path):
    path = tmp_path / ".env"
    path.write_text("export TOKEN='abc'\nEMPTY=\n")
    assert read_env_file(path) == {"TOKEN": "abc", "EMPTY": ""}


def test_read_env_file_missing(tmp_path):
    path = tmp_path / "nope.env"
    expected = f"^env file {re.escape(str(path))}: no such file or directory$"
    with pytest.raises(EnvFileError, match=expected):
        read_env_file(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_read_env_file_unreadable(tmp_path):
    path = tmp_path / ".env"
    path.write_text("A=1\n")
    path.chmod(0)
    with pytest.raises(EnvFileError, match="permission denied"):
        read_env_file(path)


def test_read_env_file_directory_binary_and_bad_line(tmp_path):
    with pytest.raises(EnvFileError, match="is a directory"):
        read_env_file(tmp_path)
    binary = tmp_path / "bin.env"
    binary.write_bytes(b"A=\xff\xfe\n")
    with pytest.raises(EnvFileError, match="not UTF-8 text"):
        read_env_file(binary)
    bad = tmp_path / "bad.env"
    bad.write_text("A=1\nnot a line\n")
    with pytest.raises(EnvFileError, match=f"^env file {re.escape(str(bad))}: line 2: "):
        read_env_file(bad)
