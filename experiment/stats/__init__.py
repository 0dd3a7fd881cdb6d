"""abflow's statistics: pure functions from sufficient statistics to typed results.

Imports no Kafka, Flink, DuckDB, Streamlit or Typer. Start from `analysis.analyse` for a whole experiment, or
call a single test (`proportions.compare_proportions`, `means.compare_revenue`, `srm.srm_test`, `bayes.compare_bayes`,
`cuped.compare_cuped`, `sequential.compare_sequential`, `power.*`, `corrections.adjust_p_values`). For several model
arms (pairwise comparisons under Holm, P(best arm), k-arm SRM) call `multiarm.compare_arms`; for lift by segment (BH
across segments, Cochran's Q for heterogeneity) `segments.segment_lift`.
"""

from experiment.stats.messages import Reason
from experiment.stats.results import Comparison, Interval, ProportionsResult
from experiment.stats.sufficient import VariantStats

__all__ = ["Comparison", "Interval", "ProportionsResult", "Reason", "VariantStats"]
