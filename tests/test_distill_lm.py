"""``kdkeras distill-lm`` and ``kdkeras cache-teacher`` on tiny presets saved here (no network)."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras.cli.dispatch import main

keras_hub = pytest.importorskip("keras_hub")
from kdkeras.text import causal_lm  # noqa: E402

PLAYS = [f"{title}\n\nACT I\n" + f"{line}\n" * 30 for title, line in (
    ("THE FIRST", "To be or not to be."), ("THE SECOND", "A comedy of errors."),
    ("THE THIRD", "The tempest, the storm."), ("THE FOURTH", "Kings and crowns."))]


def gpt2_preset(path, layers=2, seed=0, reverse=False, length=64, intermediate=32, dropout=0.1):
    from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

    byte_values, characters = bytes_to_unicode()
    vocabulary = {c: i for i, (_, c) in enumerate(sorted(zip(byte_values, characters), reverse=reverse))}
    vocabulary["<|endoftext|>"] = len(vocabulary)
    vocabulary["Ġt"] = len(vocabulary)
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["Ġ t"])
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=258, num_layers=layers, num_heads=2, hidden_dim=16,
                                             intermediate_dim=intermediate, max_sequence_length=length,
                                             dropout=dropout)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=length)
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
    model.save_to_preset(str(path))
    return model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_lm")
    gpt2_preset(root / "teacher", layers=4, seed=1)
    gpt2_preset(root / "other", layers=1, seed=2, reverse=True)  # another tokenizer, same sizes
    (root / "plays.txt").write_text("".join(PLAYS))
    return root


def cli(*argv):
    return main([str(a) for a in argv])


@pytest.mark.slow
def test_distill_lm_writes_a_loadable_student_preset_and_every_output(workspace, tmp_path):
    out = tmp_path / "run"
    assert cli("distill-lm", "--teacher", workspace / "teacher", "--student", "from-teacher:2", "--data",
               workspace / "plays.txt", "--out", out, "--steps", 6, "--sequence-length", 32, "--batch-size", 4,
               "--verbose", 0) == 0
    for name in ("metrics.json", "report.md", "samples.md"):
        assert (out / name).stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("teacher", "student_before", "student_after"):
        assert {"bits_per_byte", "bits_per_token", "perplexity"} <= set(metrics[key])
    assert {"kl_to_teacher", "agreement"} <= set(metrics["student_after"])
    assert metrics["tokens_per_second"] > 0 and metrics["command"].startswith("kdkeras distill-lm")
    assert len(metrics["documents"]["held_out"]) == 1  # 5 % of 4 plays, at least one, whole
    student = keras_hub.models.CausalLM.from_preset(str(out / "student"))
    assert student.backbone.num_layers == 2 and student.preprocessor is not None
    assert np.asarray(student.preprocessor.tokenizer("ab")).tolist() == [97, 98]
    assert "teacher" in (out / "samples.md").read_text() and "student after" in (out / "samples.md").read_text()


def test_from_teacher_takes_every_kth_layer_and_the_embeddings(workspace):
    teacher = causal_lm.load_causal_lm(str(workspace / "teacher"))
    student = causal_lm.student_from_teacher(teacher, 2)
    assert student.backbone.num_layers == 2
    for i, j in ((0, 0), (1, 2)):  # every second of four layers
        for a, b in zip(student.backbone.transformer_layers[i].weights, teacher.backbone.transformer_layers[j].weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    other = teacher.backbone.transformer_layers[1].weights[0].numpy()
    assert not np.array_equal(student.backbone.transformer_layers[1].weights[0].numpy(), other)
    np.testing.assert_array_equal(student.backbone.token_embedding.embeddings.numpy(),
                                  teacher.backbone.token_embedding.embeddings.numpy())
    with pytest.raises(ValueError, match="from-teacher:5 needs 1 to 4 layers"):
        causal_lm.student_from_teacher(teacher, 5)


@pytest.mark.slow
def test_lora_students_are_saved_merged(workspace, tmp_path):
    out = tmp_path / "lora"
    assert cli("distill-lm", "--teacher", workspace / "teacher", "--student", "from-teacher:1", "--data",
               workspace / "plays.txt", "--out", out, "--steps", 4, "--sequence-length", 32, "--batch-size", 4,
               "--lora-rank", 2, "--learning-rate", 0.05, "--verbose", 0) == 0
    student = keras_hub.models.CausalLM.from_preset(str(out / "student"))
    assert not any("lora" in v.path for v in student.weights)
    start = causal_lm.student_from_teacher(causal_lm.load_causal_lm(str(workspace / "teacher")), 1)
    query = [(a, b) for a, b in zip(student.weights, start.weights) if a.path.endswith("query/kernel")]
    assert query and any(not np.allclose(a.numpy(), b.numpy()) for a, b in query)  # the adapters were merged in
    embeddings = student.backbone.token_embedding.embeddings.numpy()
    np.testing.assert_array_equal(embeddings, start.backbone.token_embedding.embeddings.numpy())  # frozen by LoRA


def test_prompt_completion_windows_weigh_the_completion_only():
    tokenizer = kdkeras.language.byte_level_gpt2_tokenizer()
    docs = causal_lm.Documents([("Q: hi?", " A: yo"), ("x", "yz")], ["line 1", "line 2"], True)
    x, y, w = causal_lm.token_windows(tokenizer, docs, 12)
    ids = x["token_ids"]
    assert ids[0, :6].tolist() == list(b"Q: hi?") and y[0, 5:11].tolist() == list(b" A: yo")
    np.testing.assert_array_equal(w[0], [0] * 5 + [1] * 7)  # the positions predicting " A: yo" and the end token
    assert y[0, 11] == tokenizer.end_token_id
    np.testing.assert_array_equal(w[1], [1, 1, 1] + [0] * 9)
    assert x["padding_mask"][1].tolist() == [True] * 4 + [False] * 8


def test_text_windows_predict_every_token_once_and_pad_the_last():
    tokenizer = kdkeras.language.byte_level_gpt2_tokenizer()
    x, y, w = causal_lm.token_windows(tokenizer, causal_lm.Documents(["abcdefghij"], ["a"], False), 4)
    targets = y[w > 0].tolist()
    assert targets == list(b"bcdefghij") + [tokenizer.end_token_id]
    assert x["token_ids"][0].tolist() == list(b"abcd") and x["token_ids"][1].tolist() == list(b"efgh")


@pytest.mark.slow
def test_the_teacher_cache_is_resumable_and_checked(workspace, tmp_path):
    cache = tmp_path / "cache"
    args = ["cache-teacher", "--teacher", workspace / "teacher", "--data", workspace / "plays.txt", "--top-k", 4,
            "--sequence-length", 32, "--out", cache, "--shard-batches", 2, "--batch-size", 4, "--verbose", 0]
    assert cli(*args) == 0
    shards = sorted(p.name for p in cache.iterdir() if p.name.startswith("shard-"))
    assert len(shards) >= 2
    times = {s: (cache / s).stat().st_mtime_ns for s in shards}
    import shutil

    shutil.rmtree(cache / shards[-1])  # an interrupted run
    assert cli(*args) == 0
    assert (cache / shards[-1]).is_dir()
    assert all((cache / s).stat().st_mtime_ns == times[s] for s in shards[:-1])  # the others were kept
    out = tmp_path / "from-cache"
    assert cli("distill-lm", "--teacher", workspace / "teacher", "--student", "from-teacher:1", "--data",
               workspace / "plays.txt", "--out", out, "--steps", 3, "--sequence-length", 32, "--batch-size", 4,
               "--teacher-cache", cache, "--verbose", 0) == 0
    assert json.loads((out / "metrics.json").read_text())["student_after"]["bits_per_byte"] > 0


@pytest.mark.slow
def test_a_hugging_face_checkpoint_directory_distils(tmp_path):
    """A GPT-2 checkpoint in Hugging Face's layout (config.json, model.safetensors, vocab.json, merges.txt)."""
    from safetensors.numpy import save_file

    source = gpt2_preset(tmp_path / "keras", layers=2, seed=3, intermediate=64)  # Hugging Face GPT-2: 4 x 16
    bb, d = source.backbone, 16
    hf = tmp_path / "hf"
    hf.mkdir()
    tensors = {"wte.weight": bb.token_embedding.embeddings.numpy(),
               "wpe.weight": bb.position_embedding.position_embeddings.numpy(),
               "ln_f.weight": bb.layer_norm.gamma.numpy(), "ln_f.bias": bb.layer_norm.beta.numpy()}
    for i, layer in enumerate(bb.transformer_layers):
        att = layer._self_attention_layer
        q, k, v = (getattr(att, n) for n in ("query_dense", "key_dense", "value_dense"))
        tensors[f"h.{i}.attn.c_attn.weight"] = np.concatenate([t.kernel.numpy().reshape(d, d) for t in (q, k, v)], 1)
        tensors[f"h.{i}.attn.c_attn.bias"] = np.concatenate([t.bias.numpy().reshape(d) for t in (q, k, v)])
        tensors[f"h.{i}.attn.c_proj.weight"] = att.output_dense.kernel.numpy().reshape(d, d)
        tensors[f"h.{i}.attn.c_proj.bias"] = att.output_dense.bias.numpy()
        for name, norm in (("ln_1", layer._self_attention_layer_norm), ("ln_2", layer._feedforward_layer_norm)):
            tensors[f"h.{i}.{name}.weight"], tensors[f"h.{i}.{name}.bias"] = norm.gamma.numpy(), norm.beta.numpy()
        tensors[f"h.{i}.mlp.c_fc.weight"] = layer._feedforward_intermediate_dense.kernel.numpy()
        tensors[f"h.{i}.mlp.c_fc.bias"] = layer._feedforward_intermediate_dense.bias.numpy()
        tensors[f"h.{i}.mlp.c_proj.weight"] = layer._feedforward_output_dense.kernel.numpy()
        tensors[f"h.{i}.mlp.c_proj.bias"] = layer._feedforward_output_dense.bias.numpy()
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, str(hf / "model.safetensors"))
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 258,
                                                "n_layer": 2, "n_head": 2, "n_embd": d, "n_positions": 64,
                                                "resid_pdrop": 0.0}))
    tokenizer = source.preprocessor.tokenizer
    (hf / "vocab.json").write_text(json.dumps(tokenizer.vocabulary))
    (hf / "merges.txt").write_text("#version: 0.2\nĠ t\n")
    converted = causal_lm.load_causal_lm(str(hf))
    ids = {"token_ids": np.array([[5, 9, 100, 7]]), "padding_mask": np.ones((1, 4), bool)}
    np.testing.assert_allclose(converted(ids).numpy(), source(ids).numpy(), atol=1e-4)  # the same model
    data = tmp_path / "plays.txt"
    data.write_text("".join(PLAYS))
    assert cli("distill-lm", "--teacher", hf, "--student", "from-teacher:1", "--data", data, "--out",
               tmp_path / "run", "--steps", 2, "--sequence-length", 32, "--batch-size", 4, "--verbose", 0) == 0


@pytest.mark.parametrize("case", ["missing", "not-causal", "tokenizers", "bad-json", "no-field", "empty",
                                  "too-long", "out-file", "cache-teacher", "student-spec"])
def test_bad_input_exits_2_with_one_line_and_no_run_folder(case, workspace, tmp_path, capsys):
    out = tmp_path / "run"
    data = workspace / "plays.txt"
    teacher, student, extra = workspace / "teacher", "from-teacher:1", []
    if case == "missing":
        teacher = tmp_path / "nowhere"
    elif case == "not-causal":
        teacher = tmp_path / "notlm"
        teacher.mkdir()
        (teacher / "config.json").write_text(json.dumps({"registered_name": "keras_hub>BertBackbone", "config": {}}))
    elif case == "tokenizers":
        student = workspace / "other"
    elif case in ("bad-json", "no-field", "empty"):
        data = tmp_path / "data.jsonl"
        data.write_text({"bad-json": '{"text": "a"}\n{oops\n', "no-field": '{"text": "a"}\n{"title": "b"}\n',
                         "empty": "\n"}[case])
    elif case == "too-long":
        extra = ["--sequence-length", 500]
    elif case == "out-file":
        out.write_text("x")
    elif case == "cache-teacher":
        cache = tmp_path / "cache"
        assert cli("cache-teacher", "--teacher", workspace / "other", "--data", data, "--top-k", 2,
                   "--sequence-length", 32, "--out", cache, "--verbose", 0) == 0
        extra = ["--teacher-cache", cache, "--sequence-length", 32]
    elif case == "student-spec":
        student = "from-teacher:two"
    capsys.readouterr()
    code = cli("distill-lm", "--teacher", teacher, "--student", student, "--data", data, "--out", out, "--steps", 2,
               "--verbose", 0, "--sequence-length", 32, *extra)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("kdkeras distill-lm: error:"), err
    expected = {"missing": "not a preset", "not-causal": "could not be loaded as a causal language model",
                "tokenizers": "tokenizers differ", "bad-json": "line 2 is not JSON", "no-field": "line 2 needs",
                "empty": "holds no text", "too-long": "beyond the maximum", "out-file": "is a file",
                "cache-teacher": "another teacher fingerprint", "student-spec": "from-teacher:LAYERS"}[case]
    assert expected in err
    assert out.is_file() if case == "out-file" else not out.exists()


def test_a_bfloat16_teacher_and_mixed_bfloat16_student_step_near_float32(workspace):
    """--teacher-dtype bfloat16 halves the teacher's weight bytes; --dtype-policy mixed_bfloat16 keeps float32
    weights; one step stays within 2 % of float32's loss, its update within 5 % in norm and 0.98 in direction."""
    import tensorflow as tf

    from kdkeras.text import lm_job

    runs = {}
    for student_dtype, teacher_dtype in (("float32", "float32"), ("mixed_bfloat16", "bfloat16")):
        settings = kdkeras.LMRecipe(teacher=str(workspace / "teacher"), student="from-teacher:2",
                                    data=str(workspace / "plays.txt"), out=str(workspace / "unused"),
                                    sequence_length=32, dtype_policy=student_dtype, teacher_dtype=teacher_dtype)
        job = lm_job.prepare(settings)
        x, y, w = (tf.nest.map_structure(lambda a: a[:8], part) for part in job.data.train)
        d = kdkeras.Distiller(job.student, job.teacher)
        d.compile(optimizer=keras.optimizers.SGD(0.5), alpha=0.5, temperature=1.0)
        loss = d.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0, return_dict=True)["loss"]
        before = np.concatenate([v.numpy().ravel() for v in job.student.trainable_variables])
        d.fit(x, y, sample_weight=w, batch_size=8, epochs=1, verbose=0, shuffle=False)
        after = np.concatenate([v.numpy().ravel() for v in job.student.trainable_variables])
        teacher_bytes = sum(v.numpy().nbytes for v in job.teacher.weights)
        runs[teacher_dtype] = (loss, after - before, teacher_bytes, job)
    (loss32, update32, bytes32, _), (loss16, update16, bytes16, job16) = runs["float32"], runs["bfloat16"]
    assert job16.teacher.backbone.token_embedding.embeddings.dtype == "bfloat16"
    assert job16.student.backbone.token_embedding.embeddings.dtype == "float32"
    assert job16.student.backbone.token_embedding.compute_dtype == "bfloat16"
    assert bytes16 * 2 == bytes32
    np.testing.assert_allclose(loss16, loss32, rtol=0.02)
    assert abs(np.linalg.norm(update16) / np.linalg.norm(update32) - 1) < 0.05
    cosine = update16 @ update32 / (np.linalg.norm(update16) * np.linalg.norm(update32))
    assert cosine > 0.98 and np.linalg.norm(update32) > 1e-3


def test_tensorboard_logs_carry_the_loss_and_the_distillation_settings(workspace, tmp_path):
    import tensorflow as tf

    from kdkeras.text import lm_job

    recipe = kdkeras.LMRecipe(teacher=str(workspace / "teacher"), student="from-teacher:1",
                              data=str(workspace / "plays.txt"), out=str(tmp_path / "run"), steps=2,
                              sequence_length=32, batch_size=2, temperature=2.0, tensorboard=str(tmp_path / "tb"),
                              verbose=0)
    lm_job.distil(lm_job.prepare(recipe), recipe)
    events = sorted((tmp_path / "tb" / "distilled").rglob("events.out.tfevents*"))
    assert events
    tags = {}
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags[value.tag] = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
    assert {"epoch_loss", "epoch_distillation_loss"} <= set(tags)
    assert tags["epoch_temperature"] == 2.0


def test_the_recipe_checks_its_settings():
    base = {"teacher": "t", "student": "from-teacher:1", "data": "d.txt", "out": "o"}
    assert kdkeras.LMRecipe(**base).data == ("d.txt",)
    for bad, fragment in (({"steps": 0}, "--steps"), ({"dtype_policy": "float16"}, "--dtype-policy"),
                          ({"student": "from-teacher:x"}, "from-teacher:LAYERS"),
                          ({"on_policy_fraction": 0.5, "top_k": 4}, "teacher online"),
                          ({"teacher_dtype": "int8"}, "--teacher-dtype")):
        with pytest.raises(ValueError, match=fragment):
            kdkeras.LMRecipe(**{**base, **bad})
    with pytest.raises(dataclasses.FrozenInstanceError):
        kdkeras.LMRecipe(**base).steps = 5


TWO_CPUS = os.path.join(os.path.dirname(__file__), "helpers", "two_cpus.py")


MIRRORED_LM = os.path.join(os.path.dirname(__file__), "helpers", "mirrored_lm.py")


@pytest.mark.slow
def test_mirrored_on_two_cpu_devices_trains_the_one_device_student():
    """Each global batch split over two replicas (tokens counted over the global batch) gives the one-device
    student; the same check would fail for a step that averaged per replica (tests/test_language_models.py)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, MIRRORED_LM], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == {"one": 1, "two": 2}
    assert result["moved"] > 1e-3 and result["max_weight_gap"] < 1e-5, result


@pytest.mark.slow
def test_distill_lm_runs_mirrored_on_two_cpu_devices(workspace, tmp_path):
    """The command with --strategy mirrored: two replicas, the same outputs as on one device."""
    import subprocess
    import sys

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, TWO_CPUS, "distill-lm", "--teacher", str(workspace / "teacher"),
                           "--student", "from-teacher:2", "--data", str(workspace / "plays.txt"), "--steps", "4",
                           "--sequence-length", "32", "--batch-size", "4", "--verbose", "0", "--strategy",
                           "mirrored", "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["settings"]["strategy"] == "mirrored"
    assert keras_hub.models.CausalLM.from_preset(str(out / "student")).backbone.num_layers == 2


MULTIWORKER_LM = os.path.join(os.path.dirname(__file__), "helpers", "multiworker_lm.py")


@pytest.mark.slow
def test_two_local_workers_train_the_single_process_student(tmp_path):
    """Two MultiWorkerMirroredStrategy workers on 127.0.0.1 end with the single process' student; the command
    with --strategy multiworker runs on both, and only the chief writes --out."""
    import subprocess
    import sys

    from helpers.shared import run_local_workers

    gpt2_preset(tmp_path / "teacher", layers=4, seed=1, dropout=0.0)
    (tmp_path / "plays.txt").write_text("".join(PLAYS))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    args = [str(tmp_path / "teacher"), str(tmp_path / "plays.txt")]
    single = subprocess.run([sys.executable, MULTIWORKER_LM, *args, str(tmp_path / "single.npz")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    for code, _, err in run_local_workers(
            lambda i: [sys.executable, MULTIWORKER_LM, *args, str(tmp_path / f"worker{i}.npz")], env, timeout=600):
        assert code == 0, err[-3000:]
    ref = np.load(tmp_path / "single.npz")
    for i in (0, 1):
        run = np.load(tmp_path / f"worker{i}.npz")
        assert int(run["replicas"]) == 2 and int(ref["replicas"]) == 1
        for key in (k for k in ref.files if k.startswith("w")):
            np.testing.assert_allclose(run[key], ref[key], atol=1e-5, err_msg=f"worker {i} {key}")
    out = tmp_path / "cli"
    results = run_local_workers(lambda i: [sys.executable, "-m", "kdkeras", "distill-lm", "--teacher", args[0],
                                           "--student", "from-teacher:2", "--data", args[1], "--steps", "2",
                                           "--sequence-length", "32", "--batch-size", "4", "--verbose", "0",
                                           "--strategy", "multiworker", "--out", str(out)], env, timeout=600)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and (out / "student").is_dir()


@pytest.mark.slow
def test_a_cache_written_in_two_parts_trains_the_student_of_a_one_process_cache(workspace, tmp_path):
    """cache-teacher --shard 0/2 and 1/2 write the cache one process writes; a missing part is refused.
    (A teacher without dropout: the student from it trains alike twice in one process.)"""
    gpt2_preset(tmp_path / "teacher", layers=4, seed=1, dropout=0.0)
    common = ["cache-teacher", "--teacher", tmp_path / "teacher", "--data", workspace / "plays.txt", "--top-k", 4,
              "--sequence-length", 32, "--shard-batches", 1, "--batch-size", 4, "--verbose", 0]
    assert cli(*common, "--out", tmp_path / "one") == 0
    assert cli(*common, "--out", tmp_path / "two", "--shard", "1/2") == 0
    train = ["distill-lm", "--teacher", tmp_path / "teacher", "--student", "from-teacher:1", "--data",
             workspace / "plays.txt", "--steps", 3, "--sequence-length", 32, "--batch-size", 4, "--verbose", 0]
    assert cli(*train, "--out", tmp_path / "early", "--teacher-cache", tmp_path / "two") == 2  # part 0 missing
    assert not (tmp_path / "early").exists()
    assert cli(*common, "--out", tmp_path / "two", "--shard", "0/2") == 0
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(one) > 3
    assert (tmp_path / "one" / "manifest.json").read_text() == (tmp_path / "two" / "manifest.json").read_text()
    weights = []
    for cache in ("one", "two"):
        assert cli(*train, "--out", tmp_path / f"from-{cache}", "--teacher-cache", tmp_path / cache) == 0
        student = keras_hub.models.CausalLM.from_preset(str(tmp_path / f"from-{cache}" / "student"))
        weights.append([w.numpy() for w in student.weights])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    assert cli("cache-teacher", *common[1:], "--out", tmp_path / "bad", "--shard", "2/2") == 2


def test_a_llama3_checkpoints_rms_norm_epsilon_is_kept(tmp_path):
    """KerasHub's Llama 3 converter drops rms_norm_eps; loaded through kdkeras, the checkpoint's value and the
    original model's logits come back."""
    from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

    _, characters = bytes_to_unicode()
    vocabulary = {c: i for i, c in enumerate(characters)}
    for special in ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                    "Ġt"):
        vocabulary[special] = len(vocabulary)
    tokenizer = keras_hub.models.Llama3Tokenizer(vocabulary=vocabulary, merges=["Ġ t"])
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.Llama3Backbone(vocabulary_size=len(vocabulary), num_layers=1, num_query_heads=2,
                                               num_key_value_heads=1, hidden_dim=16, intermediate_dim=32,
                                               layer_norm_epsilon=0.5)  # large, so that a lost value shows
    model = keras_hub.models.Llama3CausalLM(
        backbone=backbone, preprocessor=keras_hub.models.Llama3CausalLMPreprocessor(tokenizer, sequence_length=16))
    model.export_to_transformers(str(tmp_path / "hf"))
    assert keras_hub.models.CausalLM.from_preset(str(tmp_path / "hf")).backbone.layer_norm_epsilon != 0.5
    loaded = causal_lm.load_causal_lm(str(tmp_path / "hf"))
    assert loaded.backbone.layer_norm_epsilon == 0.5
    x = {"token_ids": np.array([[1, 5, 9, 40, 7]]), "padding_mask": np.ones((1, 5), bool)}
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_gpt2_checkpoint_with_only_tokenizer_json_loads(workspace, tmp_path):
    """transformers 5 saves GPT-2 tokenizers as tokenizer.json alone; kdkeras builds vocab.json and merges.txt
    (in a temporary mirror: the checkpoint's folder is left as it is) and the tokenizer gives the same ids."""
    source = gpt2_preset(tmp_path / "keras", layers=1, seed=3, intermediate=64)  # Hugging Face GPT-2: 4 x 16
    hf = tmp_path / "hf"
    source.export_to_transformers(str(hf))
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))  # as transformers
    vocabulary = json.loads((hf / "vocab.json").read_text())
    merges = [line.split() for line in (hf / "merges.txt").read_text().splitlines()
              if line and not line.startswith("#")]
    (hf / "vocab.json").unlink()
    (hf / "merges.txt").unlink()
    (hf / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {
        "type": "BPE", "vocab": vocabulary, "merges": merges}}))  # transformers 5 writes merges as pairs
    before = sorted(p.name for p in hf.iterdir())
    with pytest.raises(Exception):
        keras_hub.models.CausalLM.from_preset(str(hf))  # what KerasHub alone does with it
    loaded = causal_lm.load_causal_lm(str(hf))
    assert sorted(p.name for p in hf.iterdir()) == before
    text = "to take the tempest"
    ids = np.asarray(loaded.preprocessor.tokenizer(text)).tolist()
    assert ids == np.asarray(source.preprocessor.tokenizer(text)).tolist() and 257 in ids  # the merge "Ġ t" applies
    x = {"token_ids": np.array([[5, 9, 100, 7]]), "padding_mask": np.ones((1, 4), bool)}
    np.testing.assert_allclose(loaded(x), source(x), atol=1e-5)


def _qwen3(tied, seed=0):
    from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

    _, characters = bytes_to_unicode()
    vocabulary = {c: i for i, c in enumerate(characters)}
    for token in ("Ġt", "<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocabulary[token] = len(vocabulary)
    tokenizer = keras_hub.models.Qwen3Tokenizer(vocabulary=vocabulary, merges=["Ġ t"])
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.Qwen3Backbone(vocabulary_size=len(vocabulary), num_layers=2, num_query_heads=4,
                                              num_key_value_heads=2, head_dim=8, hidden_dim=16, intermediate_dim=32,
                                              tie_word_embeddings=tied, layer_norm_epsilon=1e-5)
    return keras_hub.models.Qwen3CausalLM(
        backbone=backbone, preprocessor=keras_hub.models.Qwen3CausalLMPreprocessor(tokenizer, sequence_length=16))


@pytest.mark.parametrize("build", ["qwen3-tied", "qwen3-untied", "gpt2"])
def test_a_student_exported_in_hugging_face_layout_reads_back_to_the_same_ids_and_logits(build, tmp_path):
    """Through KerasHub's own Hugging Face loader (no torch needed); with transformers too where it is installed."""
    from kdkeras.text import hf_export

    if build == "gpt2":
        model = gpt2_preset(tmp_path / "keras", layers=2, seed=3, intermediate=64)  # KerasHub reads n_inner as 4 d
    else:
        model = _qwen3(tied=build == "qwen3-tied")
    hf_export.export_hf(model, str(tmp_path / "hf"))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == [hf_export.SUPPORTED[type(model.backbone).__name__]]
    back = causal_lm.load_causal_lm(str(tmp_path / "hf"))
    text = "to take the tempest"
    ids = np.asarray(back.preprocessor.tokenizer(text)).tolist()
    assert ids == np.asarray(model.preprocessor.tokenizer(text)).tolist()
    x = {"token_ids": np.array([ids[:6]]), "padding_mask": np.ones((1, 6), bool)}
    np.testing.assert_allclose(back(x), model(x), rtol=1e-5, atol=1e-5)
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError:
        return
    their_ids = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))(text, add_special_tokens=False)
    assert their_ids["input_ids"] == ids
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    logits = theirs(torch.tensor(x["token_ids"])).logits.detach().numpy()
    np.testing.assert_allclose(logits, model(x), rtol=1e-4, atol=1e-4)


def test_an_architecture_without_an_exporter_is_refused_before_training(tmp_path):
    from kdkeras.text import hf_export

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.Phi3Backbone(vocabulary_size=40, num_layers=1, num_query_heads=2,
                                             num_key_value_heads=2, hidden_dim=8, intermediate_dim=16)
    with pytest.raises(ValueError, match="supports GPT2, Llama3, Gemma, Mistral, Qwen, Qwen3; this model is a Phi3"):
        hf_export.check_exportable(keras_hub.models.Phi3CausalLM(backbone=backbone, preprocessor=None))


@pytest.mark.slow
def test_distill_lm_export_hf_writes_a_student_that_reads_back(tmp_path):
    gpt2_preset(tmp_path / "teacher", layers=2, seed=1, intermediate=64)
    (tmp_path / "plays.txt").write_text("".join(PLAYS))
    out = tmp_path / "run"
    assert cli("distill-lm", "--teacher", tmp_path / "teacher", "--student", "from-teacher:1", "--data",
               tmp_path / "plays.txt", "--out", out, "--steps", 2, "--sequence-length", 32, "--batch-size", 4,
               "--export", "hf", "--verbose", 0) == 0
    keras_student = keras_hub.models.CausalLM.from_preset(str(out / "student"))
    hf_student = causal_lm.load_causal_lm(str(out / "student-hf"))
    x = {"token_ids": np.array([[5, 9, 100, 7]]), "padding_mask": np.ones((1, 4), bool)}
    np.testing.assert_allclose(hf_student(x), keras_student(x), rtol=1e-5, atol=1e-5)
