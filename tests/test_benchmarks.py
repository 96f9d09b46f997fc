"""The benchmarks still run (at toy sizes); their figures are printed by ``make bench``, never asserted here."""

from benchmarks import bench_finetune


def test_backbone_throughput_bench_runs_every_contender(capsys):
    rates = bench_finetune.main(["--backbone", "tiny", "--posters", "16", "--image-size", "32", "--batch-size", "8",
                                 "--top-blocks", "1"])
    assert list(rates) == ["embed (forward pass)", "fit, backbone frozen", "fine-tune, top 1 blocks",
                           "fine-tune, all 3 blocks"]
    assert all(rate > 0 for rate in rates.values())
    assert "x of the embed pass" in capsys.readouterr().out


def test_orchestration_bench_help_and_arguments(capsys, tmp_path):
    """Only the command line: the benchmark itself starts S3 and Airflow and runs for minutes."""
    import pytest

    from benchmarks import bench_orchestration

    with pytest.raises(SystemExit) as exited:
        bench_orchestration.parse_args(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--movies", "--image-size", "--trials", "--epochs", "--ova-genres",
                                         "--parallelism"))
    args = bench_orchestration.parse_args([])
    assert (args.movies, args.image_size, args.trials, args.epochs, args.ova_genres, args.parallelism) == (
        600, 64, 2, 2, [], None)
    args = bench_orchestration.parse_args(["--ova-genres", "Comedy", "Drama", "--parallelism", "2"])
    assert args.ova_genres == ["Comedy", "Drama"] and args.parallelism == 2
    assert bench_orchestration.run_settings(args)["n_trials"] == 2
    assert bench_orchestration.targets_of(args.ova_genres) == ["genre-cnn", "Comedy", "Drama"]
    assert not args.cold_jax and bench_orchestration.parse_args(["--cold-jax"]).cold_jax
    jax_env = bench_orchestration.stack_jax_cache(tmp_path)  # the very cache the stack's tasks will use
    assert jax_env["KERAS_BACKEND"] == "jax"
    assert jax_env["JAX_COMPILATION_CACHE_DIR"] == str((tmp_path / "airflow" / "airflow" / "cache" / "jax").resolve())
    for bad in (["--movies", "0"], ["--parallelism", "0"], ["--stack-env", "NOVALUE"]):
        with pytest.raises(SystemExit):
            bench_orchestration.parse_args(bad)
