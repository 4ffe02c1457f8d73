"""The cost model is pure arithmetic: checked against the paper's worked numbers, without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from miet_fed.comm import cost
from miet_fed.errors import MietError


def test_paper_numbers_vit_b16_224():
    tokens = cost.vit_token_count(224, 16)
    assert tokens == 197
    assert cost.feature_bytes_per_image("sum", tokens, 768, 12, "fp32") == 605_184
    assert cost.feature_bytes_per_image("sum", tokens, 768, 12, "fp16") == 302_592
    assert cost.feature_bytes_per_image("all", tokens, 768, 12, "fp32") == 7_867_392
    assert cost.feature_bytes_per_image("cls", tokens, 768, 12, "fp32") == 3_072
    assert cost.raw_image_bytes(224, 224, 3) == 150_528


def test_gather_star_is_one_map_for_any_k():
    sizes = {cost.feature_bytes_per_image("sum", 65, 384, k, "fp32") for k in range(13)}
    assert sizes == {65 * 384 * 4}
    assert cost.feature_bytes_per_image("all", 65, 384, 3, "fp32") == 4 * 65 * 384 * 4


def test_int8_counts_one_scale_per_token():
    assert cost.encoded_bytes((65, 384), "int8") == 65 * 384 + 65 * 4
    assert cost.encoded_bytes((384,), "int8") == 384 + 4


def test_weight_exchange_fedpara_convention():
    assert cost.weight_exchange_bytes(1000, participants=10, rounds=5) == 2 * 10 * 1000 * 4 * 5


def test_unknown_dtype_is_a_user_error():
    with pytest.raises(MietError, match="valid: fp32, fp16, bf16, int8"):
        cost.encoded_bytes((3,), "fp8")


def test_cost_module_does_not_import_torch():
    code = (
        "import sys, miet_fed.comm.cost as c; c.feature_bytes_per_image('all',5,4,2,'fp16'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
