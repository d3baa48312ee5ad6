"""attnfast.scaled_dot_product_attention differs from torch's in nothing a caller can observe:
values, dtype, type, gradients (the mask's included) and errors, for the inputs that used to
differ (issue: torch's mask objects, float masks that require grad, rejected inputs, scale)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right, causal_upper_left

import attnfast
from conftest import require_backend


def _qkv(lq=5, lk=7, d=8, dtype=torch.float32):
    torch.manual_seed(0)
    return (torch.randn(2, 3, lq, d, dtype=dtype, requires_grad=True),
            torch.randn(2, 3, lk, d, dtype=dtype, requires_grad=True),
            torch.randn(2, 3, lk, d, dtype=dtype, requires_grad=True))


@pytest.mark.parametrize("helper", [causal_lower_right, causal_upper_left])
def test_causal_bias_objects_keep_their_semantics(helper):
    q, k, v = _qkv()
    bias = helper(q.shape[-2], k.shape[-2])
    got = attnfast.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert type(got) is type(want) is torch.Tensor
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want)
    ga = torch.autograd.grad(got.sum(), (q, k, v))
    gw = torch.autograd.grad(want.sum(), (q, k, v))
    for a, b in zip(ga, gw):
        torch.testing.assert_close(a, b)


def test_float_mask_that_requires_grad_gets_torchs_gradient():
    q, k, v = _qkv()
    mask = torch.randn(q.shape[-2], k.shape[-2], requires_grad=True)
    (g_ours,) = torch.autograd.grad(attnfast.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum(), mask)
    (g_torch,) = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum(), mask)
    torch.testing.assert_close(g_ours, g_torch)


@pytest.mark.parametrize("kwargs", [
    {"dropout_p": -0.1},
    {"dropout_p": 1.5},
    {"attn_mask": torch.zeros(5, 7, dtype=torch.float64)},
    {"attn_mask": torch.zeros(5, 7, dtype=torch.int32)},
    {"attn_mask": torch.zeros(5, 7), "is_causal": True},
    {"attn_mask": torch.zeros(5, 6)},
], ids=["p<0", "p>1", "mask-fp64", "mask-int", "mask-and-causal", "mask-shape"])
def test_inputs_torch_rejects_are_rejected_the_same_way(kwargs):
    q, k, v = _qkv()
    with pytest.raises(Exception) as theirs:
        F.scaled_dot_product_attention(q, k, v, **kwargs)
    with pytest.raises(type(theirs.value)):
        attnfast.scaled_dot_product_attention(q, k, v, **kwargs)


@pytest.mark.parametrize("scale", [float("inf"), float("nan"), 0.0, -0.5])
def test_scale_values_compute_as_torch(scale):
    q, k, v = _qkv()
    got = attnfast.scaled_dot_product_attention(q, k, v, scale=scale)
    want = F.scaled_dot_product_attention(q, k, v, scale=scale)
    torch.testing.assert_close(got, want, equal_nan=True)


def test_fully_masked_rows_give_zero_like_torch():
    require_backend("cpu")
    q, k, v = _qkv()
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[2] = False
    got = attnfast.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(got[..., 2, :], torch.zeros_like(got[..., 2, :]))
    torch.testing.assert_close(got, want)


def test_plain_masks_still_run_on_attnfasts_kernels():
    require_backend("cpu")
    from attnfast.ops import attention as attn_ops
    q, k, v = _qkv()
    for mask in (torch.zeros(5, 7), torch.ones(5, 7, dtype=torch.bool)):
        assert attn_ops._sdpa_route(q, k, v, mask, 0.0, False, None, False) is not None
    assert attn_ops._sdpa_route(q, k, v, None, 0.0, True, 1.0 / math.sqrt(8), False) is not None
