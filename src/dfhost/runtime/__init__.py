"""What a host runs: the engine that claims and commits work, activities, durable HTTP, timer
triggers and their schedules, retention."""
