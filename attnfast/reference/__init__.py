"""Pure-PyTorch reference implementations: the test oracle and the fallback of every op.

They use only torch operations (autograd gives their backward) and never import kernels.
"""
from attnfast.reference.attention import attention  # noqa: F401
from attnfast.reference.boom import boom  # noqa: F401
from attnfast.reference.dropout import dropout_keep_mask  # noqa: F401
from attnfast.reference import lstm, memory  # noqa: F401  (LSTM; memory addressing: NTM, DNC, Graves)
