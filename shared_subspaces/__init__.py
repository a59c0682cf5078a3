__version__ = "0.1.0"
# the built-in attention variants register themselves on import (config <- layers <- attention <- mla, shared_kv)
from . import attention, mla, shared_kv  # noqa: F401
