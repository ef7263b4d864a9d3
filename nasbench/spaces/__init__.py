"""Search spaces: one file each, registered by name (``SPACES.get("shufflenet")``)."""

from nasbench.registry import Registry

SPACES: Registry = Registry("space", package="nasbench.spaces")
