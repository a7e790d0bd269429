"""The tile sizes the Gluon kernels are written for, shared by the host side and the TMA descriptors."""

CHUNK = 64  # tokens per step (the wgmma tiles' rows); the plans that enable these kernels use it too
VALUE_BLOCK = 64  # value channels per sweep program
