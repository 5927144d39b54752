"""`python -m gnnopt.demo` runs offline and prints numbers measured by the run itself."""
from __future__ import annotations

import pytest
import torch

from gnnopt.demo import main as demo_main
from gnnopt.rules import create


def test_demo_prints_a_side_by_side_table_and_a_plot(tmp_path, capsys):
    torch.manual_seed(0)
    create("pna", hidden=16, layers=2).save_pretrained(tmp_path / "rule")
    plot = tmp_path / "demo.png"
    assert demo_main(["--rule", str(tmp_path / "rule"), "--steps", "20", "--record-every", "10",
                      "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "embedded subset" in out and "Adam lr 0.01" in out
    rows = [line for line in out.splitlines() if line.startswith("| 10 ") or line.startswith("| 20 ")]
    assert len(rows) == 2 and all(line.count("%") == 2 for line in rows)
    assert plot.stat().st_size > 10_000


def test_demo_without_any_rule_explains(monkeypatch, capsys):
    monkeypatch.setattr("gnnopt.demo.list_pretrained", lambda: [])
    assert demo_main([]) == 2
    assert "no pretrained rule" in capsys.readouterr().err


def test_demo_runs_the_bundled_pna_rule_by_default(tmp_path, capsys):
    """The README's first command: no options, the bundled ``pna-fmnist17`` against Adam."""
    from gnnopt.demo import default_rule

    assert default_rule() == "pna-fmnist17"
    assert demo_main(["--steps", "10", "--record-every", "5", "--plot", str(tmp_path / "demo.png")]) == 0
    out = capsys.readouterr().out
    assert "gnnopt pna-fmnist17" in out and "Adam lr 0.01" in out


@pytest.mark.parametrize("args, match", [(["--rule", "no-such-rule"], "neither a bundled checkpoint"),
                                         (["--device", "nonsense"], "Invalid --device"),
                                         pytest.param(["--device", "cuda"], "CUDA is not available",
                                                      marks=pytest.mark.skipif(torch.cuda.is_available(),
                                                                               reason="CUDA is here"))])
def test_demo_bad_options_are_one_line_errors(capsys, args, match):
    assert demo_main([*args, "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_eval_help_names_no_unshipped_document(capsys):
    from gnnopt.eval import main as eval_main

    with pytest.raises(SystemExit):
        eval_main(["--help"])
    assert "SPEC" not in capsys.readouterr().out


@pytest.mark.parametrize("command", ["eval", "training", "demo"])
@pytest.mark.parametrize("device", ["meta", "banana", pytest.param("cuda", marks=pytest.mark.skipif(
    torch.cuda.is_available(), reason="CUDA is here"))])
def test_every_cli_refuses_a_device_it_cannot_use_in_words(tmp_path, capsys, command, device):
    from gnnopt.eval import main as eval_main
    from gnnopt.training.__main__ import main as training_main

    args = {"eval": (eval_main, ["--baseline", "adam", "--lr", "1e-3", "--steps", "2", "--seeds", "101",
                                 "--embedded", "--out", str(tmp_path / "e")]),
            "training": (training_main, ["--rule", "ff", "--outer-steps", "1", "--inner-steps", "2", "--embedded",
                                         "--no-progress", "--out", str(tmp_path / "t")]),
            "demo": (demo_main, ["--steps", "1"])}
    main, rest = args[command]
    assert main([*rest, "--device", device]) == 2
    err = capsys.readouterr().err
    assert "--device" in err and "Traceback" not in err
