"""The simulator: decide() against simulated GPUs and modelled workloads in virtual time."""
