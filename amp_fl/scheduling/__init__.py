"""Device scheduling, model pruning and RB allocation: AMP-FL (Algorithms 1-2) and its baselines."""

from amp_fl.scheduling.amp import AmpScheduler, aoi_weight_matrix, max_weight_matching, top_square_sums
from amp_fl.scheduling.aoi_table import AGE_DTYPE, AoITable
from amp_fl.scheduling.assign import schedule_with_aoi_pruning
from amp_fl.scheduling.c_scheduling import CScheduler
from amp_fl.scheduling.fixed_ratio import (
    FIXED_RATIO_SELECTIONS,
    FixedRatioScheduler,
    FixedRatioSelection,
    fixed_keep_counts,
)
from amp_fl.scheduling.full_model import FULL_MODEL_SELECTIONS, FullModelScheduler, FullModelSelection
from amp_fl.scheduling.levels import LEVEL_ASSIGNMENTS, LevelAssignment, WidthLevelScheduler
from amp_fl.scheduling.paper_route import PaperRouteScheduler, solve_p4
from amp_fl.scheduling.pr_scheduling import PR_ASSIGNMENTS, PRAssignment, PRScheduler
from amp_fl.scheduling.random_scheduling import RandomScheduler
from amp_fl.scheduling.registry import available_schedulers, build_scheduler, register_scheduler
from amp_fl.scheduling.schedule import Schedule, Scheduler, assemble_schedule, kept_weights

__all__ = [
    "AGE_DTYPE",
    "FIXED_RATIO_SELECTIONS",
    "FULL_MODEL_SELECTIONS",
    "LEVEL_ASSIGNMENTS",
    "PR_ASSIGNMENTS",
    "AmpScheduler",
    "AoITable",
    "CScheduler",
    "FixedRatioScheduler",
    "FixedRatioSelection",
    "FullModelScheduler",
    "FullModelSelection",
    "LevelAssignment",
    "PRAssignment",
    "PRScheduler",
    "PaperRouteScheduler",
    "RandomScheduler",
    "Schedule",
    "Scheduler",
    "WidthLevelScheduler",
    "aoi_weight_matrix",
    "assemble_schedule",
    "available_schedulers",
    "build_scheduler",
    "fixed_keep_counts",
    "kept_weights",
    "max_weight_matching",
    "register_scheduler",
    "schedule_with_aoi_pruning",
    "solve_p4",
    "top_square_sums",
]
