"""Planning: the pure planner, the plan model and plan files, drift, policy budgets."""
