"""Test support for attnfast (not part of the public API).

``attnfast.testing.simt``: run the CUDA kernels on the CPU under the SIMT host harness
(the test-only extension ``attnfast._simt``); ``attnfast.testing.simt_report``: a pytest plugin
printing which kernels ran under it.
"""
