"""The HiGHS wrapper: a linear model built once and solved as an LP or a MIP, with count budgets."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeplane._extras import require

MIP_REL_GAP = 0.01


# Branch-and-bound nodes the coupled MIP may explore: the budget is a count, so the same input gives the same
# plan on a busy machine or an idle one (the time limit stays as a safety net, and says so when it ends a search).
MIP_NODE_LIMIT = 20_000


class MilpModel:
    """Columns and rows gathered in Python, handed to HiGHS in one go."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.cost: list[float] = []
        self.integer: list[int] = []
        self.rows: list[tuple[list[int], list[float], float, float]] = []
        self.sums: list[tuple[int, list[int], list[float]]] = []  # columns defined as sums of others

    def column(self, cost: float, *, integer: bool = False, upper: float = math.inf) -> int:
        self.lower.append(0.0)
        self.upper.append(upper)
        self.cost.append(cost)
        if integer:
            self.integer.append(len(self.cost) - 1)
        return len(self.cost) - 1

    def row(self, indices: list[int], values: list[float], lower: float, upper: float) -> None:
        self.rows.append((indices, values, lower, upper))

    def sum_column(self, indices: list[int], values: list[float]) -> int:
        """A continuous column equal to ``sum(values[i] * x[indices[i]])``: rows that share a long sum name it
        once instead of repeating it (a sparse model solves several times faster than a dense one)."""
        column = self.column(0.0)
        self.row([*indices, column], [*values, -1.0], 0.0, 0.0)
        self.sums.append((column, indices, values))
        return column

    def complete(self, values: list[float]) -> None:
        """Set the sum columns of ``values`` from the columns they sum (a start the solver accepts)."""
        for column, indices, weights in self.sums:
            values[column] = sum(values[i] * w for i, w in zip(indices, weights, strict=True))

    def solve(
        self,
        *,
        relax: bool = False,
        time_limit_seconds: float = 60.0,
        node_limit: int | None = None,
        start: list[float] | None = None,
        gap: float = MIP_REL_GAP,
        known_bound: float = 0.0,
    ) -> Any:
        """``known_bound``: a lower bound on the optimum found elsewhere; the search stops as soon as its best
        placement is within ``gap`` of it (the solver's own bound may be far weaker)."""
        # The solver loads when a plan is made, not with the control plane (a gateway-only install has none).
        highspy = require("highspy", "plan", "planning")
        h: Any = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("mip_rel_gap", gap)
        h.setOptionValue("time_limit", time_limit_seconds)  # a safety net: the node limit ends a search first
        if node_limit is not None:
            h.setOptionValue("mip_max_nodes", node_limit)
        h.setOptionValue("threads", 1)
        n = len(self.cost)
        h.addVars(n, np.array(self.lower), np.array(self.upper))
        h.changeColsCost(n, np.arange(n, dtype=np.int32), np.array(self.cost))
        if self.integer and not relax:
            kinds = np.array([highspy.HighsVarType.kInteger] * len(self.integer))
            h.changeColsIntegrality(len(self.integer), np.array(self.integer, dtype=np.int32), kinds)
        starts: list[int] = []
        indices: list[int] = []
        values: list[float] = []
        for row_indices, row_values, _, _ in self.rows:
            starts.append(len(indices))
            indices += row_indices
            values += row_values
        h.addRows(
            len(self.rows),
            np.array([r[2] for r in self.rows]),
            np.array([r[3] for r in self.rows]),
            len(indices),
            np.array(starts, dtype=np.int32),
            np.array(indices, dtype=np.int32),
            np.array(values, dtype=float),
        )
        if start is not None and not relax:
            solution = highspy.HighsSolution()
            solution.col_value = start
            h.setSolution(solution)
        if known_bound > 0 and not relax:

            def enough(event: Any) -> None:
                best = float(event.data_out.mip_primal_bound)
                if math.isfinite(best) and best - known_bound <= gap * abs(best):
                    event.data_in.user_interrupt = True

            h.cbMipInterrupt.subscribe(enough)
        h.run()
        return h
