"""The loss along straight lines (and planes) between states of trained networks: the evaluator, a
run's sweep, curve shapes, barrier points, pairs of end states and loss planes."""
