"""The controller's pure core: observed state, decide(), safety, placement, power model."""
