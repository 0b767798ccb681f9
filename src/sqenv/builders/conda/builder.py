"""The conda builder (`sqenv.builders.base.Builder`): create and refresh from `create`, update from `update`."""

from sqenv.builders.conda.create import build, refresh
from sqenv.builders.conda.update import update

__all__ = ["build", "refresh", "update"]
