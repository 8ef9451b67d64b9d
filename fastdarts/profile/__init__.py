"""Search cost: per-phase profiling of a search step (``fastdarts profile``) and the
:class:`SearchCost` callback for real searches."""

from .cost import SearchCost
from .profiler import PHASES, SCHEMA_VERSION, check_schema, format_report, run_profile, write_png

__all__ = ["SearchCost", "PHASES", "SCHEMA_VERSION", "check_schema", "format_report", "run_profile",
           "write_png"]
