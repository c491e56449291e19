"""How well θ adapts to tasks it has never seen: the protocol, statistics over tasks, baselines
and reports."""
