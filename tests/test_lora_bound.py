"""simulations/lora_bound.py: LoRA trains only its adapters and the head; the backbone stays."""

from __future__ import annotations

import json

import torch

from tests.conftest import load_script


def _module():
    return load_script("lora_bound")


def test_lora_starts_as_the_backbone_and_trains_only_adapters_and_head():
    from miet_fed.cloud.backbone import build_backbone

    lb = _module()
    vit = build_backbone("vit_tiny_patch16_224", "random", 32).net
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = vit.forward_features(x)
    frozen = {n: p.detach().clone() for n, p in vit.named_parameters()}
    net = lb.LoRAViT(vit, num_classes=3, rank=4, alpha=8.0)
    with torch.no_grad():
        torch.testing.assert_close(net.vit.forward_features(x), before)  # B = 0: the identity
    names = set(net.trainable())
    assert names and all(n.startswith("head.") or n.endswith((".lora_a", ".lora_b")) for n in names)
    opt = torch.optim.SGD(net.trainable().values(), lr=0.5)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 2]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in net.vit.named_parameters():
        base = n.replace("qkv.base.", "qkv.")
        if base in frozen:
            torch.testing.assert_close(p, frozen[base])  # the backbone did not move
    with torch.no_grad():
        assert not torch.allclose(net.vit.forward_features(x), before)  # the adapters did


def test_quick_run_writes_its_summary(tmp_path, capsys):
    lb = _module()
    assert lb.main(["--quick", "--epochs", "1", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "seed_0.json").read_text())
    assert summary["method"] == "lora" and 0 <= summary["test_acc"] <= 1
    assert summary["n_train"] + summary["n_val"] == 40 and summary["best_epoch"] == 1
