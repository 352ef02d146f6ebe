"""The performance suite: pipeline throughput and training-step speed on this machine."""
