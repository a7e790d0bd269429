"""decaylab: decay in linear attention, from the kernel to the design-space study."""

__version__ = "0.1.0"
