"""ASHA that keeps its rungs when a sweep is stopped (Ctrl+C) and resumed.

Ray Tune saves a stopped sweep's trials and its search algorithm, but not its scheduler
(``AsyncHyperBandScheduler`` has ``save``/``restore``; Tune 2.60 calls neither): a resumed
sweep's ASHA starts with empty rungs and judges the trials left against each other only,
so it stops fewer of them than the same sweep left alone, and which trials count as
"stopped early" depends on whether the sweep was interrupted. :class:`ResumableASHA`
writes its state beside Tune's after each decision and reads it back when the resumed
sweep starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler


class ResumableASHA(ASHAScheduler):
    """``ASHAScheduler`` whose rungs survive a resume.

    Args:
        state_path: where the state is kept: in the sweep's Tune folder (a new sweep
            deletes it first, see ``sweep_run``), by the absolute path the sweep started
            with, since Tune tells a scheduler nothing of its folder. A sweep resumed from
            a folder moved elsewhere finds no state there and starts ASHA's rungs afresh.
        kwargs: ``ASHAScheduler``'s.
    """

    def __init__(self, state_path: str, **kwargs):
        super().__init__(**kwargs)
        self.state_path = state_path

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        """Called by Tune when a sweep starts or resumes: a resumed one reads its rungs."""
        if not super().set_search_properties(metric, mode, **spec):
            return False
        if Path(self.state_path).is_file():
            self.restore(self.state_path)
        return True

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def _save(self) -> None:
        partial = f"{self.state_path}.partial"
        self.save(partial)
        os.replace(partial, self.state_path)  # a killed write never looks finished
