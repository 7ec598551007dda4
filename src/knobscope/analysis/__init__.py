"""Analysis: pure functions on result tables that answer the seeds' questions.

Pareto sets and hypervolume (:mod:`.pareto`, on moocore), knob coupling (:mod:`.coupling`),
knob effects by ANOVA (:mod:`.effects`), single- vs multi-knob policies (:mod:`.policies`),
workload comparison and illustrative cases (:mod:`.compare`), recommendations under
constraints (:mod:`.recommend`), and :func:`analyze`, which runs them all on a loaded run.
"""

from knobscope.analysis.analyze import AnalysisOptions, analyze, run_objectives
from knobscope.analysis.compare import compare_workloads, illustrative_cases
from knobscope.analysis.coupling import coupling_analysis, fixed_knob_frontiers
from knobscope.analysis.effects import knob_effects, marginal_means
from knobscope.analysis.objectives import Objective, default_objectives, direction_of, resolve_objectives
from knobscope.analysis.pareto import ParetoResult, hypervolume, pareto_front, pareto_mask, reference_point
from knobscope.analysis.policies import policy_comparison
from knobscope.analysis.recommend import Goal, Scenario, recommend
from knobscope.analysis.results import Analysis

__all__ = [
    "Analysis",
    "AnalysisOptions",
    "analyze",
    "run_objectives",
    "compare_workloads",
    "illustrative_cases",
    "coupling_analysis",
    "fixed_knob_frontiers",
    "knob_effects",
    "marginal_means",
    "Objective",
    "default_objectives",
    "direction_of",
    "resolve_objectives",
    "ParetoResult",
    "hypervolume",
    "pareto_front",
    "pareto_mask",
    "reference_point",
    "policy_comparison",
    "Goal",
    "Scenario",
    "recommend",
]
