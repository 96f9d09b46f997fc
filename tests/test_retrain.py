"""The model plane end to end on a tiny synthetic snapshot: trials, training, champion vs challenger, registry."""

import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from postergenre import registry
from postergenre.cli import app
from postergenre.config import Settings
from postergenre.feature_cache import CACHE_VERSION
from postergenre.genres import CNN_MODEL as CNN
from postergenre.genres import model_name
from postergenre.run_settings import RunSettings as RetrainConfig
from postergenre.steps.context import load_npz, load_run, store_npz
from postergenre.steps.embed import embed_step
from postergenre.steps.evaluate import evaluate_step
from postergenre.steps.finetune import fine_tune_step
from postergenre.steps.ingest import ingest_snapshot
from postergenre.steps.prepare import prepare_dataset
from postergenre.steps.promote import promote_step
from postergenre.steps.run import run_retrain
from postergenre.steps.start import start_run
from postergenre.steps.train import train_step
from postergenre.steps.tune import halving_step, plan_step, run_tuning, select_step, trial_step
from postergenre.storage import open_store
from postergenre.synth import generate_snapshot

pytestmark = pytest.mark.slow

CONFIG = dict(snapshot_id="snap", backbone="tiny", weights="none", image_size=32, batch_size=64, n_trials=2,
              max_epochs=4)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One ingested, prepared snapshot and a first run whose genre-cnn was force-promoted (champion A)."""
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home)
    export = generate_snapshot(home / "export", movies=2500, seed=11)
    ingest_snapshot(str(export.out), snapshot_id="snap", settings=settings)
    prepare_dataset("snap", settings=settings)
    config = RetrainConfig(**CONFIG)
    first = run_retrain("run-a", config, settings=settings, targets=[CNN, "Western"])
    forced = promote_step("run-a", CNN, actor="test", force=True, force_reason="bootstrap champion",
                          settings=settings)
    return settings, config, first, forced


def _registry(settings):
    return open_store(settings.registry_url)


@pytest.fixture
def faked_scores(monkeypatch):
    """For tests that fake a candidate's evaluated scores to steer the decision: the artefact check would rightly
    refuse such a candidate (its real outputs differ), so it is skipped here; its own tests are below."""
    import postergenre.steps.promote as promote

    monkeypatch.setattr(promote, "check_artifact", lambda *a: {"ok": True, "posters": 0, "faked": True})


def _overwrite_test_predictions(settings, run_id, make):
    """Replace a candidate's stored test probabilities (what evaluation scores) with constructed ones."""
    ctx = load_run(run_id, settings)
    key = ctx.layout.candidate(model_name(CNN), "predictions.npz")
    with np.load(io.BytesIO(ctx.store.get_bytes(key))) as npz:
        arrays = {k: npz[k] for k in npz.files}
    from postergenre.datasets import load_labels

    labels = load_labels(ctx.store, "snap", ctx.config.seed).set_index("movie_id")["genre"].astype(str)
    classes = sorted(set(labels))
    truth = np.array([classes.index(labels[i]) for i in arrays["test_ids"]])
    arrays["test"] = make(truth, len(classes))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    ctx.store.put_bytes(key, buf.getvalue())


def test_first_run_records_everything_and_the_forced_champion_is_audited(world):
    settings, _, first, forced = world
    assert first["trials"] == 2 and first["trained"] == 2
    ctx = load_run("run-a", settings)
    layout = ctx.layout
    for key in (layout.config, layout.plan, layout.best, layout.report_md, layout.report_json):
        assert ctx.store.exists(key), key
    assert ctx.store.exists(ctx.layout.decision(CNN))
    assert forced["promoted"] is True
    log = registry.history(_registry(settings), CNN)
    decision = ctx.store.get_json(layout.decision(CNN))
    # Promoted on merit by the run itself, or else forced by the test: the alias log says which.
    expected = decision["reason"] if decision["promote"] else "forced by test: bootstrap champion"
    assert log[-1]["to_version"] == forced["version"] and log[-1]["reason"] == expected
    assert forced["forced"] is (not decision["promote"])
    lineage = registry.show_version(_registry(settings), CNN, forced["version"])["lineage"]
    assert "snap" in str(lineage) and "tiny" in str(lineage)
    recorded = lineage.get("lineage", lineage)
    assert recorded["backbone"] == "tiny" and recorded["weights_id"] == "none"
    assert recorded["feature_key"].startswith(f"features/{CACHE_VERSION}/snap/tiny/none/")


def test_finished_trials_are_not_trained_again(world, monkeypatch):
    settings = world[0]
    plan = load_run("run-a", settings).store.get_json("runs/run-a/plan.json")
    import postergenre.training as training

    monkeypatch.setattr(training, "fit_head", lambda *a, **k: pytest.fail("a finished trial was retrained"))
    again = trial_step("run-a", plan[0], settings)
    assert again["trial_id"] == plan[0]["trial_id"]


def test_better_challenger_is_promoted_and_worse_one_kept(world, faked_scores):
    settings, config, _, forced = world
    champion_a = forced["version"]
    run_retrain("run-b", config, settings=settings, targets=[CNN])
    _overwrite_test_predictions(settings, "run-b", lambda truth, k: np.eye(k)[truth])  # perfect on purpose
    decision = evaluate_step("run-b", CNN, settings)
    assert decision["promote"] is True and decision["champion_version"] == champion_a
    promoted = promote_step("run-b", CNN, actor="test", settings=settings)
    assert promoted["promoted"] is True
    assert registry.get_champion(_registry(settings), CNN)["version"] == promoted["version"]
    # promoting again is a no-op: a retried task never double-promotes
    assert promote_step("run-b", CNN, actor="test", settings=settings)["changed"] is False

    run_retrain("run-c", config, settings=settings, targets=[CNN])
    rng = np.random.default_rng(0)
    _overwrite_test_predictions(settings, "run-c", lambda truth, k: np.eye(k)[(truth + rng.integers(1, k, len(truth))) % k])
    kept = evaluate_step("run-c", CNN, settings)
    assert kept["promote"] is False
    assert promote_step("run-c", CNN, actor="test", settings=settings)["promoted"] is False
    assert registry.get_champion(_registry(settings), CNN)["version"] == promoted["version"]
    decision_doc = load_run("run-c", settings).store.get_json("runs/run-c/decisions/genre-cnn.json")
    assert decision_doc["bootstrap"]["ci_high"] < 0  # the numbers behind "keep" are written down

    rolled = registry.rollback(_registry(settings), CNN, actor="test", reason="drill")
    assert rolled["version"] == champion_a


def test_champion_moved_during_evaluation_is_never_overwritten(world, faked_scores):
    settings, config, _, _ = world
    run_retrain("run-d", config, settings=settings, targets=[CNN])
    _overwrite_test_predictions(settings, "run-d", lambda truth, k: np.eye(k)[truth])
    assert evaluate_step("run-d", CNN, settings)["promote"] is True
    # another promoter wins the race between evaluation and promotion
    store = _registry(settings)
    other = registry.list_versions(store, CNN)[0]["version"]
    current = registry.get_champion(store, CNN)["version"]
    if other == current:
        other = registry.list_versions(store, CNN)[1]["version"]
    registry.promote(store, CNN, other, actor="someone else", reason="race")
    result = promote_step("run-d", CNN, actor="test", settings=settings)
    assert result["promoted"] is False and "re-evaluate" in result["reason"]
    assert registry.get_champion(store, CNN)["version"] == other


def test_run_config_is_immutable(world):
    settings, config, _, _ = world
    with pytest.raises(ValueError, match="another configuration"):
        start_run("run-a", RetrainConfig(**{**CONFIG, "max_epochs": 9}), settings=settings)


def test_predict_cli_on_a_real_jpeg(world, monkeypatch):
    settings = world[0]
    monkeypatch.setenv("POSTERGENRE_HOME", str(settings.home))
    from postergenre.config import get_settings

    get_settings.cache_clear()
    poster = next((settings.home / "export" / "posters").glob("*.jpg"))
    result = CliRunner().invoke(app, ["predict", str(poster), "--json", "--top-k", "2"])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    import json

    payload = json.loads(result.stdout)
    genres = payload["predictions"][0]["genres"]
    assert len(genres) == 2 and genres[0]["probability"] >= genres[1]["probability"]
    assert payload["model"] == CNN


def test_hyperband_rounds_retrain_each_brackets_best_with_more_epochs(world):
    settings = world[0]
    start_run("run-hb", RetrainConfig(**{**CONFIG, "tuning": "hyperband", "n_trials": 4, "max_epochs": 9}), settings)
    embed_step("run-hb", settings)
    results = run_tuning("run-hb", settings)
    plan = load_run("run-hb", settings).store.get_json("runs/run-hb/plan.json")
    # R = 9, eta = 3: the first bracket (9 configurations, cut to the 4 asked for) halves 4 -> 1 -> 1.
    assert [(t["round"], t["epochs"]) for t in plan] == [(0, 1)] * 4 + [(1, 3), (2, 9)]
    assert [r["trial_id"] for r in results] == [t["trial_id"] for t in plan]
    for round_index in (1, 2):
        previous = [r for r, t in zip(results, plan, strict=True) if t["round"] == round_index - 1]
        promoted = next(r for r, t in zip(results, plan, strict=True) if t["round"] == round_index)
        # ranked by validation cross-entropy: label smoothing and L2 make val_loss measure different things
        assert promoted["hp"] == min(previous, key=lambda r: r["val_cross_entropy"])["hp"]
    assert halving_step("run-hb", 3, settings) == []  # past the plan's last round
    assert select_step("run-hb", settings) == min(results, key=lambda r: (r["val_cross_entropy"], r["trial_id"]))

    start_run("run-hb2", RetrainConfig(**{**CONFIG, "tuning": "hyperband", "n_trials": 4, "max_epochs": 9}), settings)
    plan_step("run-hb2", settings)
    with pytest.raises(RuntimeError, match="round 0 trials t000, t001, t002, t003 have no result"):
        halving_step("run-hb2", 1, settings)


def test_fine_tuned_candidate_is_kept_consistent_and_scored_on_posters_as_champion(world, monkeypatch):
    settings = world[0]
    import postergenre.steps.train as train

    # An MLP head on the random tiny backbone, which gains from any fine-tuning (a linear-probe head chosen on
    # val may already sit where fine-tuning cannot lower the val loss: then the stage is rightly undone).
    monkeypatch.setattr(train, "choose_head", lambda head, *a: (head, "mlp", {}))
    config = RetrainConfig(**{**CONFIG, "fine_tune": True, "fine_tune_blocks": 1, "fine_tune_learning_rate": 1e-3})
    run_retrain("run-ft", config, settings=settings, targets=[CNN])
    ctx = load_run("run-ft", settings)
    outcome = ctx.store.get_json(ctx.layout.candidate(CNN, "fine_tune.json"))
    # Lite0 or EfficientNet would start from ImageNet features; this random tiny backbone gains from any tuning.
    assert outcome["fine_tuned"] is True and outcome["val_loss"] < outcome["val_loss_before"]
    assert outcome["trainable_layers"] == ["block3_conv"] and outcome["train_posters_per_second"] > 0
    assert ctx.store.get_json(ctx.layout.fine_tune_checkpoints(CNN) + "/state.json")["finished"] is True
    candidate = ctx.store.get_json(ctx.layout.candidate(CNN))
    assert candidate["fine_tune"]["val_loss"] == outcome["val_loss"]
    assert "## Fine-tune stage (genre-cnn)" in ctx.store.get_bytes(ctx.layout.report_md).decode()
    assert ctx.store.get_json(ctx.layout.report_json)["fine_tune"]["val_loss"] == outcome["val_loss"]

    import postergenre.finetune as finetune

    monkeypatch.setattr(finetune, "fine_tune", lambda *a, **k: pytest.fail("a finished fine-tune ran again"))
    assert fine_tune_step("run-ft", settings) == outcome

    forced = promote_step("run-ft", CNN, actor="test", force=True, force_reason="fine-tuned champion", settings=settings)
    lineage = registry.show_version(_registry(settings), CNN, forced["version"])["lineage"]
    lineage = lineage.get("lineage", lineage)
    assert lineage["fine_tuned"] is True and lineage["fine_tune"]["top_blocks"] == 1

    # The next challenger shares the cached features, but the fine-tuned champion's backbone is its own:
    # it must be scored on the test posters, and exactly as its stored predictions say.
    import postergenre.steps.evaluate as evaluate

    scored = []
    real = evaluate.predict_posters_of
    monkeypatch.setattr(evaluate, "predict_posters_of", lambda *a: scored.append(real(*a)) or scored[-1])
    run_retrain("run-g", RetrainConfig(**{**CONFIG, "dry_run": True}), settings=settings, targets=[CNN])
    with np.load(io.BytesIO(ctx.store.get_bytes(ctx.layout.candidate(CNN, "predictions.npz")))) as npz:
        stored_ids, stored = npz["test_ids"], npz["test"]
    g_ids = np.load(io.BytesIO(ctx.store.get_bytes("runs/run-g/candidates/genre-cnn/predictions.npz")))["test_ids"]
    assert len(scored) == 1 and np.array_equal(g_ids, stored_ids)  # same snapshot and seed: same test split
    np.testing.assert_allclose(scored[0], stored, atol=1e-5)

    train_step("run-ft", CNN, settings)  # re-training the candidate makes its fine-tune stale
    assert not ctx.store.exists(ctx.layout.candidate(CNN, "fine_tune.json"))
    assert not list(ctx.store.list(ctx.layout.fine_tune_checkpoints(CNN) + "/"))


def test_promotion_refuses_an_artefact_whose_outputs_differ_from_the_evaluated_scores(world, tmp_path):
    """The registered backbone+head model runs on test posters before the pointer moves; a tampered one
    (here: its head's output layer inverted after evaluation, as a wrong class order or stale weights would be)
    is registered but never becomes champion."""
    import keras

    settings, config, _, _ = world
    run_retrain("run-x", RetrainConfig(**{**CONFIG, "dry_run": True}), settings=settings, targets=[CNN])
    store = load_run("run-x", settings).store
    start_run("run-y", config, settings=settings)  # a fresh run id on the same data and settings
    for key in store.list_keys("runs/run-x/"):
        if "/decisions/" not in key and not key.endswith("/config.json"):
            store.put_bytes(key.replace("runs/run-x/", "runs/run-y/", 1), store.get_bytes(key))
    layout = load_run("run-y", settings).layout
    local = tmp_path / "model.keras"
    store.download_file(layout.candidate(CNN, "model.keras"), local)
    model = keras.models.load_model(local, compile=False)
    last = model.get_layer("head").layers[-1]
    last.set_weights([w * -3 for w in last.get_weights()])
    model.save(local)
    store.upload_files([(local, layout.candidate(CNN, "model.keras"))])
    evaluate_step("run-y", CNN, settings)
    before = registry.get_champion(_registry(settings), CNN)
    result = promote_step("run-y", CNN, actor="test", force=True, force_reason="tampered", settings=settings)
    assert result["promoted"] is False and "registered artefact's outputs differ" in result["reason"]
    print(f"tampered artefact: {result['artifact_check']}")
    assert result["artifact_check"]["max_abs_diff"] > result["artifact_check"]["tolerance"]
    assert registry.get_champion(_registry(settings), CNN) == before
    signature = json.loads((_registry(settings)).get_bytes(
        f"models/genre-cnn/versions/{result['version']}/signature.json"))
    assert signature["input"]["image_size"] == CONFIG["image_size"] and signature["kind"] == "multiclass"


def test_versions_describe_themselves(world):
    settings, _, _, forced = world
    shown = registry.show_version(_registry(settings), CNN, forced["version"])
    lineage = shown["lineage"].get("lineage", shown["lineage"])
    assert lineage["code_version"] and "git_sha" in lineage and "image_digest" in lineage
    assert forced["artifact_check"]["ok"] is True and forced["artifact_check"]["posters"] == 8
    print(f"artefact check of a real candidate: max |diff| {forced['artifact_check']['max_abs_diff']}")


def test_the_artefact_check_posters_are_decoded_at_embed_as_serving_decodes_them(world):
    """Embed (TensorFlow) stages the check's test posters, so a promote task on JAX needs no TensorFlow; they
    are exactly what decoding them at check time gives, and a run without them still gets checked."""
    from postergenre.steps.verify import check_artifact, decode_posters, sample_rows

    settings, _, _, forced = world
    ctx = load_run("run-a", settings)
    staged = load_npz(ctx.store, ctx.layout.check_posters)
    test_ids = ctx.features["test"][0]
    assert np.array_equal(staged["movie_ids"], test_ids[sample_rows(len(test_ids))]) and len(staged["movie_ids"]) == 8
    assert np.array_equal(staged["images"], decode_posters(ctx, staged["movie_ids"], CONFIG["image_size"]))
    predictions = load_npz(ctx.store, ctx.layout.candidate(CNN, "predictions.npz"))
    ctx.store.delete(ctx.layout.check_posters)
    try:
        decoded_now = check_artifact(ctx, CNN, forced["version"], predictions)
    finally:
        store_npz(ctx.store, ctx.layout.check_posters, **staged)
    assert decoded_now == {k: v for k, v in forced["artifact_check"].items() if k in decoded_now}


def test_ova_members_are_bags_of_the_reports_sets_without_label_smoothing(world):
    """A member trains MEMBER_BAGS heads on draws of its 70/30 set, with smoothing off, and lineage and the report
    say so."""
    from postergenre.members import MEMBER_BAGS

    settings = world[0]
    ctx = load_run("run-a", settings)
    name = model_name("Western")
    candidate = ctx.store.get_json(ctx.layout.candidate(name))
    training = candidate["training"]
    assert training["bags"] == MEMBER_BAGS and len(training["bag_summaries"]) == MEMBER_BAGS
    assert "70/30" in training["sets"] and training["hp"]["label_smoothing"] == 0.0
    assert candidate["hp"].get("label_smoothing", 0.0) == 0.0
    version = registry.list_versions(_registry(settings), name)[-1]["version"]
    lineage = registry.show_version(_registry(settings), name, version)["lineage"]
    assert lineage.get("lineage", lineage)["training"]["bags"] == MEMBER_BAGS
    # The registered model is self-contained: its head is the mean of the bags (unless the probe won on val) and
    # gives the stored scores on the cached features.
    from postergenre.model_cache import load_version_model

    head = load_version_model(_registry(settings), name, version, settings).get_layer("head")
    if candidate["head"] == "mlp":
        assert [layer.name for layer in head.layers if layer.name.startswith("bag_")] == [
            f"bag_{k}" for k in range(MEMBER_BAGS)]
    predictions = load_npz(ctx.store, ctx.layout.candidate(name, "predictions.npz"))
    ids, features = ctx.features["val"]
    rows = np.searchsorted(ids, predictions["val_ids"]) if np.all(np.diff(ids) > 0) else [
        list(ids).index(i) for i in predictions["val_ids"]]
    np.testing.assert_allclose(head.predict(features[rows].astype(np.float32), verbose=0), predictions["val"],
                               atol=1e-5)
