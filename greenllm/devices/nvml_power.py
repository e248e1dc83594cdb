"""Board power from NVML: the instant reading where the driver has it, else the average.

On Ampere (except GA100) and newer GPUs, ``nvmlDeviceGetPowerUsage`` is a one-second moving
average, so a controller reading it reacts a second late. Drivers from the R530 series on
also offer the instant reading as the field ``NVML_FI_DEV_POWER_INSTANT`` of
``nvmlDeviceGetFieldValues`` (ml-energy/zeus reads it the same way, in
``zeus/device/gpu/nvidia.py``). Field values are asked for by plain field id: the scope
then stays 0, ``NVML_POWER_SCOPE_GPU`` (the GPU alone), and old nvidia-ml-py releases that
cannot pass a scope work too.
"""

from __future__ import annotations

from typing import Any

import pynvml

#: ``NVML_FI_DEV_POWER_INSTANT`` (186 in nvml.h), where nvidia-ml-py is too old to name it.
FI_DEV_POWER_INSTANT: int = getattr(pynvml, "NVML_FI_DEV_POWER_INSTANT", 186)
#: ``NVML_FI_DEV_POWER_AVERAGE`` (185 in nvml.h).
FI_DEV_POWER_AVERAGE: int = getattr(pynvml, "NVML_FI_DEV_POWER_AVERAGE", 185)

#: Errors meaning "this driver or GPU has no such field": stop asking, use the average.
FIELD_MISSING_ERRORS: tuple[int, ...] = (
    pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_INVALID_ARGUMENT,
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
)

#: ``valueType`` of ``nvmlFieldValue_t`` -> the member of its value union.
_VALUE_MEMBERS = {
    getattr(pynvml, "NVML_VALUE_TYPE_DOUBLE", 0): "dVal",
    getattr(pynvml, "NVML_VALUE_TYPE_UNSIGNED_INT", 1): "uiVal",
    getattr(pynvml, "NVML_VALUE_TYPE_UNSIGNED_LONG", 2): "ulVal",
    getattr(pynvml, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", 3): "ullVal",
    getattr(pynvml, "NVML_VALUE_TYPE_SIGNED_LONG_LONG", 4): "sllVal",
    getattr(pynvml, "NVML_VALUE_TYPE_SIGNED_INT", 5): "siVal",
}


def field_value(metric: Any) -> float:
    """The number in one ``nvmlFieldValue_t`` (unsigned int when the type is unknown)."""
    member = _VALUE_MEMBERS.get(int(metric.valueType), "uiVal")
    return float(getattr(metric.value, member))


def read_field(handle: Any, field_id: int) -> float:
    """Read one NVML field value of ``handle``.

    Raises:
        pynvml.NVMLError: The call failed, or the field's own return code is an error (the
            matching subclass, e.g. ``NVMLError_NotSupported``).
    """
    (metric,) = pynvml.nvmlDeviceGetFieldValues(handle, [field_id])
    if metric.nvmlReturn != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(metric.nvmlReturn)
    return field_value(metric)


def is_field_missing(err: pynvml.NVMLError) -> bool:
    """True when ``err`` means the field does not exist here (not a passing failure)."""
    return err.value in FIELD_MISSING_ERRORS
