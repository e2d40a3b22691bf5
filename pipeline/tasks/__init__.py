"""Tasks: what a run minimises and how it is judged. A task owns the loss, the evaluation metrics (``val/*``,
``test/*``) and the check that a model's output fits the data's targets; the objective (a metric, ``max`` or
``min``, targets in its units) says which metric the summary's time-to-target and best values follow.

One module a task (``classification``, ``regression``, ``language_model``) on a small base (``base``); the config
group ``conf/task/`` is the registry. A task of your own subclasses :class:`Task` (or one of these, e.g. to change
the loss) and is chosen with ``task._target_=yourmodule.YourTask``.
"""

from pipeline.tasks.base import Metric, Objective, Task
from pipeline.tasks.classification import Classification, EvalStats
from pipeline.tasks.language_model import LanguageModel
from pipeline.tasks.regression import Regression

__all__ = ["Classification", "EvalStats", "LanguageModel", "Metric", "Objective", "Regression", "Task"]
