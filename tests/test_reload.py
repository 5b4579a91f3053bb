"""ConfigDiff: what a reload does to each bot, from two parsed configs."""

from __future__ import annotations

from helpers import make_config

from trio_orchestrator.reload import ConfigDiff


def bot(**settings):
    return {"script": "main.py", "directory": ".", **settings}


def test_diff_sorts_bots_by_what_a_reload_does(tmp_path):
    old = make_config(
        tmp_path, {"Same": bot(), "Args": bot(args=["1"]), "Text": bot(), "Gone": bot()}
    )
    new = make_config(
        tmp_path,
        {"Same": bot(), "Args": bot(args=["2"]), "Text": bot(description="new"), "New": bot()},
    )
    diff = ConfigDiff.between(old, new)
    assert diff.added == ("New",)
    assert diff.removed == ("Gone",)
    assert diff.restarted == ("Args",)
    assert diff.updated == ("Text",)
    assert diff.unchanged == ("Same",)
    assert diff.warnings == ()
    assert diff.summary()[:2] == ["added: New", "removed: Gone"]


def test_a_global_default_that_a_bot_inherits_restarts_it(tmp_path):
    old = make_config(tmp_path, {"A": bot(), "B": bot(stop_timeout=3)}, stop_timeout=10)
    new = make_config(tmp_path, {"A": bot(), "B": bot(stop_timeout=3)}, stop_timeout=20)
    diff = ConfigDiff.between(old, new)
    assert diff.restarted == ("A",) and diff.unchanged == ("B",)


def test_settings_read_at_start_up_are_named_in_a_warning(tmp_path):
    old = make_config(tmp_path, {"A": bot()}, log_directory="logs")
    new = make_config(tmp_path, {"A": bot()}, log_directory="elsewhere")
    (warning,) = ConfigDiff.between(old, new).warnings
    assert "global_settings.log_directory changed" in warning
