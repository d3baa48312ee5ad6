"""Op layer: argument checks, backend implementations, fake kernels and autograd formulas.

One module per op family. Importing a module registers its ops with attnfast.backends.
"""
