"""Drop-in modules. Each takes ``backend="auto"`` and passes it to its ops."""
from attnfast.nn.attention import SingleHeadAttention  # noqa: F401
from attnfast.nn.boom import Boom  # noqa: F401
from attnfast.nn.lstm import LSTM  # noqa: F401
from attnfast.nn import sharnn  # noqa: F401  (SHA-RNN's own signatures: Attention, Boom)
from attnfast.nn.memory import DNC, DNCCoreState, DNCMemoryAccess, GravesWindow, NTMMemory, NTMState  # noqa: F401
