"""The use cases (validate, plan, apply, refresh, import) as functions; they never print."""
