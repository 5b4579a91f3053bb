"""What a config reload changes: the pure difference between two configs.

The supervisor applies it: added bots start (if autostart), removed bots stop and leave
the db, bots whose settings changed restart with the new settings, and every other bot
keeps running untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from trio_orchestrator.config import BotConfig, Config

__all__ = ["ConfigDiff"]

# Settings that only change how a bot is shown or restored: applied without a restart.
_LIVE_FIELDS = ("description", "autostart")
# Global settings read once at start-up (the log directory holds open files, the poll
# interval drives a running loop): a change waits for the next `start_all`.
_START_UP_SETTINGS = ("log_directory", "command_poll_interval", "metrics_listen", "web_token")


def _needs_restart(old: BotConfig, new: BotConfig) -> bool:
    live = {field: getattr(new, field) for field in _LIVE_FIELDS}
    return attrs.evolve(old, **live) != new


@attrs.frozen
class ConfigDiff:
    """Bot names by what a reload does to them, in the new config's order."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    restarted: tuple[str, ...]  # settings changed: a running bot restarts
    updated: tuple[str, ...]  # only description/autostart changed: applied in place
    unchanged: tuple[str, ...]
    warnings: tuple[str, ...]

    @classmethod
    def between(cls, old: Config, new: Config) -> ConfigDiff:
        changed = [
            name for name in new.bots if name in old.bots and old.bots[name] != new.bots[name]
        ]
        restarted = tuple(n for n in changed if _needs_restart(old.bots[n], new.bots[n]))
        warnings = tuple(
            f"global_settings.{key} changed; it takes effect at the next start_all"
            for key in _START_UP_SETTINGS
            if getattr(old.settings, key, None) != getattr(new.settings, key, None)
        )
        return cls(
            added=tuple(name for name in new.bots if name not in old.bots),
            removed=tuple(name for name in old.bots if name not in new.bots),
            restarted=restarted,
            updated=tuple(name for name in changed if name not in restarted),
            unchanged=tuple(n for n in new.bots if n in old.bots and old.bots[n] == new.bots[n]),
            warnings=warnings,
        )

    def summary(self) -> list[str]:
        """One line per kind of change, then the warnings."""
        kinds = ("added", "removed", "restarted", "updated", "unchanged")
        lines = [f"{kind}: {', '.join(getattr(self, kind)) or '-'}" for kind in kinds]
        return lines + [f"warning: {warning}" for warning in self.warnings]
