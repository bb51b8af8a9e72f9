"""The model hash: canonical over names, dtypes, shapes and values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from securefed.secagg.context import model_digest


def _model():
    return {
        "layer.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
        "layer.bias": np.array([0.5, -0.5, 1.0], dtype=np.float32),
        "embedding": np.ones((2, 2), dtype=np.float64),
    }


def test_digest_is_32_bytes_and_stable():
    d = model_digest(_model(), b"plan")
    assert len(d) == 32
    assert model_digest(_model(), b"plan") == d


def test_insertion_order_does_not_matter():
    forward = _model()
    backward = dict(reversed(list(forward.items())))
    assert list(forward) != list(backward)
    assert model_digest(forward) == model_digest(backward)


@pytest.mark.parametrize(
    "change",
    ["value", "dtype", "shape", "name", "plan", "extra tensor", "missing tensor"],
)
def test_sensitive_to_every_part(change):
    base = _model()
    other = _model()
    plan = b""
    if change == "value":
        other["layer.bias"][1] = np.nextafter(np.float32(-0.5), np.float32(0))
    elif change == "dtype":
        other["layer.bias"] = other["layer.bias"].astype(np.float64)
    elif change == "shape":
        other["layer.weight"] = other["layer.weight"].reshape(4, 3)
    elif change == "name":
        other["layer.Bias"] = other.pop("layer.bias")
    elif change == "plan":
        plan = b"other plan"
    elif change == "extra tensor":
        other["z"] = np.zeros(0, dtype=np.float32)
    else:
        del other["embedding"]
    assert model_digest(other, plan) != model_digest(base)


def test_byte_order_is_canonical():
    base = _model()
    swapped = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in base.items()}
    assert model_digest(swapped) == model_digest(base)


def test_non_contiguous_views_hash_like_copies():
    base = _model()
    view = {**base, "layer.weight": np.asfortranarray(base["layer.weight"])}
    assert model_digest(view) == model_digest(base)


def test_torch_tensors_match_numpy():
    base = _model()
    as_torch = {k: torch.from_numpy(v.copy()) for k, v in base.items()}
    assert model_digest(as_torch, b"p") == model_digest(base, b"p")
    with_grad = {**as_torch, "layer.bias": as_torch["layer.bias"].clone().requires_grad_()}
    assert model_digest(with_grad, b"p") == model_digest(base, b"p")


def test_object_arrays_are_refused():
    with pytest.raises(TypeError, match="numeric"):
        model_digest({"x": np.array([object()], dtype=object)})
