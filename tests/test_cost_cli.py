"""`miet-fed cost` and the comm_table study: the paper's numbers, any timm ViT, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from miet_fed.cli import main

REPO = Path(__file__).resolve().parents[1]
VIT_B = ["cost", "--model", "vit_base_patch16_224", "--img-size", "224"]


def _json_line(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_vit_b16_224_has_the_paper_numbers(capsys):
    assert main([*VIT_B, "--json"]) == 0
    report = _json_line(capsys)
    assert (report["tokens"], report["dim"], report["depth"], report["k"]) == (197, 768, 12, 12)
    got = {(r["gather"], r["dtype"]): r["bytes_per_image"] for r in report["rows"]}
    assert len(got) == 16  # 4 gathers x 4 dtypes by default
    assert got["sum", "fp32"] == 605_184
    assert got["sum", "fp16"] == got["sum", "bf16"] == 302_592
    assert got["last", "fp32"] == 605_184
    assert got["all", "fp32"] == 7_867_392
    assert got["cls", "fp32"] == 3_072
    assert got["sum", "int8"] == 197 * 768 + 197 * 4
    star = next(r for r in report["rows"] if (r["gather"], r["dtype"]) == ("all", "fp32"))
    assert star["vs_gather_star_fp32"] == 13.0
    assert star["payload_shape"] == [13, 197, 768]
    comps = {c["what"]: c for c in report["comparisons"]}
    assert comps["raw image (uplink, uint8)"]["bytes"] == 150_528
    full = comps["full fine-tuning weight exchange"]
    assert full["bytes"] == 2 * full["params"] * 4 and 85e6 < full["params"] < 87e6
    edge = report["edge"]["params"]
    assert comps["edge network weight exchange (all)"]["bytes"] == 2 * edge["total"] * 4
    assert comps["edge network weight exchange (body)"]["bytes"] == 2 * edge["body"] * 4


def test_table_is_printed(capsys):
    assert main([*VIT_B, "--gathers", "sum,all", "--dtypes", "fp32", "--k", "4"]) == 0
    out = capsys.readouterr().out
    assert "605,184" in out and "5x197x768" in out and "3,025,920" in out
    assert "raw image (uplink, uint8)" in out and "{" not in out  # no JSON without --json


@pytest.mark.parametrize(
    ("model", "size", "tokens", "dim", "depth"),
    [("vit_large_patch16_224", 224, 197, 1024, 24), ("vit_small_patch14_dinov2", 112, 65, 384, 12)],
)
def test_any_timm_vit_without_weights(capsys, model, size, tokens, dim, depth):
    argv = ["cost", "--model", model, "--img-size", str(size), "--edge", "layerwise", "--json"]
    assert main(argv) == 0
    report = _json_line(capsys)
    assert (report["tokens"], report["dim"], report["depth"]) == (tokens, dim, depth)
    rows = {(r["gather"], r["dtype"]): r["bytes_per_image"] for r in report["rows"]}
    assert rows["sum", "fp32"] == tokens * dim * 4
    assert rows["all", "fp16"] == (depth + 1) * tokens * dim * 2
    assert report["edge"]["gather"] == "all"
    assert report["edge"]["payload_shape"] == [depth + 1, tokens, dim]


def test_payload_formats_get_a_row_each(capsys):
    argv = ["cost", "--img-size", "112", "--token-pools", "1,2,4", "--proj-ranks", "0,64"]
    assert main([*argv, "--gathers", "sum,cls", "--json"]) == 0
    report = _json_line(capsys)
    rows = {(r["gather"], r["token_pool"], r["proj_rank"], r["dtype"]): r for r in report["rows"]}
    assert len(rows) == (3 * 2 + 2) * 4  # sum: 3 pools x 2 ranks; cls: unpooled, 2 ranks
    assert rows["sum", 2, 0, "fp32"]["payload_shape"] == [17, 384]  # 8x8 grid -> 4x4, + CLS
    assert rows["sum", 2, 64, "fp32"]["bytes_per_image"] == 17 * 64 * 4
    assert rows["sum", 4, 64, "int8"]["bytes_per_image"] == 5 * (64 + 4)
    assert rows["cls", 1, 64, "fp16"]["bytes_per_image"] == 64 * 2
    assert report["edge"]["payload_shape"] == [65, 384]  # the first format listed
    assert main([*argv, "--gathers", "sum", "--dtypes", "int8"]) == 0
    out = capsys.readouterr().out
    assert "token_pool" in out and "5x64" in out and "340" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token-pools", "1,3"], "token_pool=3 does not divide the 14x14 patch grid; valid: 1"),
        (["--proj-ranks", "769"], "model.proj_rank=769 is larger than the payload dimension 768"),
        (["--proj-ranks", "x"], "--proj-ranks takes comma-separated integers"),
        (["--model", "vit_bas_patch16_224"], "unknown timm model 'vit_bas_patch16_224'; did you"),
        (["--k", "99"], "k=99 is out of range for 'vit_base_patch16_224' (depth 12): use 0..12"),
        (["--dtypes", "fp32,fp8"], "unknown feature dtype 'fp8'; valid: fp32, fp16, bf16, int8"),
        (["--gathers", "sum,mean"], "unknown gather function 'mean'"),
        (["--img-size", "0"], "--img-size must be a positive number of pixels"),
        (["--edge", "lae", "--edge-gather", "cls"], "use --edge-gather sum or last"),
    ],
)
def test_errors_are_one_line(capsys, args, message):
    assert main([*VIT_B, *args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("miet-fed: error: ") and "\n" not in err, err
    assert message in err, err
    assert captured.out == ""


def test_comm_table_study_writes_its_files(tmp_path):
    out = tmp_path / "ct"
    script = REPO / "simulations" / "comm_table.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "comm_table.csv",
        "comm_table.md",
        "comparisons.csv",
    ]
    import pandas as pd

    rows = pd.read_csv(out / "comm_table.csv")
    assert len(rows) == 3 * 4 * 3  # models x gathers x dtypes
    base = rows[(rows.model == "vit_base_patch16_224") & (rows.gather == "sum")]
    assert base.set_index("dtype").bytes_per_image.to_dict() == {
        "fp32": 605_184,
        "fp16": 302_592,
        "int8": 152_084,
    }
    assert "## vit_large_patch16_224" in proc.stdout
    assert (out / "comm_table.md").read_text().startswith("# Communication cost")
