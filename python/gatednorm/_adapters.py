"""Former home of the array adapters; they live in ``_call`` now (the one call path).
Kept so that code importing ``gatednorm._adapters`` keeps working."""

from ._call import (ARRAY_IFACE, CAI, DLPACK, DLPACK_CAI, NUMPY, OWN, PROBE, TORCH, convert, dtype_of,  # noqa: F401
                    kind_of, release, resolve_stream)
