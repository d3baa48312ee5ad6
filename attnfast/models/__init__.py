"""Whole models built on attnfast's layers."""
from attnfast.models.sharnn import (  # noqa: F401
    PRESETS, SHARNN, SHARNNConfig, SHARNNState, config_from_preset, count_parameters, detach_state,
)
