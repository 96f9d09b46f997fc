"""The benchmarks still run (at toy sizes); their figures are printed by ``make bench``, never asserted here."""

from benchmarks import bench_finetune


def test_backbone_throughput_bench_runs_every_contender(capsys):
    rates = bench_finetune.main(["--backbone", "tiny", "--posters", "16", "--image-size", "32", "--batch-size", "8",
                                 "--top-blocks", "1"])
    assert list(rates) == ["embed (forward pass)", "fit, backbone frozen", "fine-tune, top 1 blocks",
                           "fine-tune, all 3 blocks"]
    assert all(rate > 0 for rate in rates.values())
    assert "x of the embed pass" in capsys.readouterr().out
