"""Jobs: the durable queue, its service verbs and the scheduler that runs them."""
