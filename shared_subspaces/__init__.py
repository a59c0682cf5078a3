__version__ = "0.1.0"
# the built-in attention variants register themselves on import (config <- layers <- attention <- mla)
from . import attention, mla  # noqa: F401
