"""The main job: ``analyze`` runs a table of steps (``steps.STEP_TABLE``) on one chain of thought, each step one
method's result saved under its key, and derives the report from them; ``Analysis`` holds those results.

- ``steps``: the table (name, file, result class, key settings, compute) and how one step is reused or computed;
- ``analysis``: ``Analysis``, the results of one folder (``Analysis.load`` reads them back without a model);
- ``analyze``: the call itself (checks, the trace, the loop over the table, the report).
"""

from anchorlens.pipeline.analysis import RESILIENCE_COLUMNS, Analysis
from anchorlens.pipeline.analyze import analyze
from anchorlens.pipeline.steps import (ATTRIBUTION_FILE, CATEGORIES_FILE, FLOW_FILE, IMPORTANCE_FILE, RECEIVERS_FILE,
                                       RESILIENCE_FILE, STEP_FILES, STEP_TABLE, SUPPRESSION_FILE, TRACE_FILE, Step,
                                       saved_key)
from anchorlens.settings import DEFAULT_STEPS, EXTRACTORS, STEPS, STYLES, check_settings

__all__ = ["Analysis", "analyze", "Step", "STEP_TABLE", "STEP_FILES", "saved_key", "RESILIENCE_COLUMNS",
           "TRACE_FILE", "CATEGORIES_FILE", "RECEIVERS_FILE", "SUPPRESSION_FILE", "IMPORTANCE_FILE", "FLOW_FILE",
           "RESILIENCE_FILE", "ATTRIBUTION_FILE", "DEFAULT_STEPS", "EXTRACTORS", "STEPS", "STYLES", "check_settings"]
