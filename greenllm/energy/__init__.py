"""Energy measurement and carbon accounting.

- :class:`EnergyMeter` measures named windows over GPUs (their energy counters) and the
  CPU/DRAM (RAPL where readable; otherwise, on request, a clearly labelled estimate).
- :mod:`greenllm.energy.carbon`: grams CO2e from energy, grid intensity and PUE.
- :mod:`greenllm.energy.accounting`: joules, work, J/unit and CO2e per job.
"""

from greenllm.energy.measurement import DeviceEnergy, Measurement
from greenllm.energy.meter import EnergyMeter, Window

__all__ = ["DeviceEnergy", "EnergyMeter", "Measurement", "Window"]
