"""``kdkeras generate`` and :mod:`kdkeras.text.generation`: the teacher's completions, on tiny presets (no network)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras.cli.dispatch import main

keras_hub = pytest.importorskip("keras_hub")
from kdkeras.text import causal_lm, generation  # noqa: E402
from kdkeras.text.generation import Sampling  # noqa: E402

PROMPTS = ["To be, or not to be", "Hark!", "What light through yonder window breaks?", "O"]


def tiny_gpt2(seed=0, length=48):
    tokenizer = kdkeras.language.byte_level_gpt2_tokenizer()
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=258, num_layers=2, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=length)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=length)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


@pytest.fixture(scope="module")
def teacher():
    return tiny_gpt2()


@pytest.fixture(scope="module")
def preset(tmp_path_factory, teacher):
    path = tmp_path_factory.mktemp("generate") / "teacher"
    teacher.save_to_preset(str(path))
    return path


def same_lines(a, b):
    """Equal records; the mean log-probability (3 decimals) may move by its last digit with the batch's shape."""
    def strip(records):
        return [{k: v for k, v in r.items() if k != "mean_logprob"} for r in records]

    return strip(a) == strip(b) and np.allclose([r["mean_logprob"] for r in a], [r["mean_logprob"] for r in b],
                                                atol=1.01e-3, rtol=0)


def greedy_reference(model, prompt_ids, new):
    """Argmax decoding by full forward passes (no cache), with the log-probabilities of the chosen tokens."""
    ids, chosen = list(prompt_ids), []
    for _ in range(new):
        logits = model({"token_ids": np.asarray([ids], np.int32), "padding_mask": np.ones((1, len(ids)), bool)})
        row = np.asarray(logits[0, -1, :258], np.float64)
        token = int(np.argmax(row))
        chosen.append(row[token] - np.log(np.exp(row - row.max()).sum()) - row.max())
        ids.append(token)
    return ids[len(prompt_ids):], float(np.mean(chosen))


def test_temperature_zero_is_argmax_decoding_with_the_teachers_log_probabilities(teacher):
    records = generation.generate(teacher, PROMPTS, sampling=Sampling(max_new_tokens=7, temperature=0), batch_size=3)
    start = generation.start_ids(teacher)
    assert start == [teacher.preprocessor.tokenizer.start_token_id]  # GPT-2's preprocessor adds it, as generate does
    for prompt, record in zip(PROMPTS, records):
        ids = start + list(np.asarray(teacher.preprocessor.tokenizer(prompt)))
        tokens, mean = greedy_reference(teacher, ids, 7)
        assert record["completion"] == _text(teacher.preprocessor.tokenizer, tokens)
        assert record["tokens"] == 7 and record["ended"] is False and record["prompt"] == prompt
        assert record["mean_logprob"] == pytest.approx(mean, abs=6e-4)


def test_the_same_seed_writes_the_same_lines_whatever_the_batch_size(teacher):
    sampling = Sampling(max_new_tokens=6, samples_per_prompt=3, temperature=1.3, top_k=40, top_p=0.9, seed=5)
    one = generation.generate(teacher, PROMPTS, sampling=sampling, batch_size=1)
    five = generation.generate(teacher, PROMPTS, sampling=sampling, batch_size=5)
    assert same_lines(one, five) and len(one) == 12
    assert [r["sample"] for r in one] == [0, 1, 2] * 4 and [r["prompt"] for r in one[:4]] == [PROMPTS[0]] * 3 + [PROMPTS[1]]
    assert len({r["completion"] for r in one}) > 6  # the samples of one prompt differ
    other = generation.generate(teacher, PROMPTS, sampling=Sampling(**{**vars(sampling), "seed": 6}), batch_size=5)
    assert other != one


def test_the_end_token_stops_a_sample_and_is_not_in_its_completion(teacher, monkeypatch):
    tokenizer = teacher.preprocessor.tokenizer
    prompt = generation.start_ids(teacher) + list(np.asarray(tokenizer("Hark!")))
    tokens, _ = greedy_reference(teacher, prompt, 10)
    stop = tokens[4]  # make the fifth token of the greedy path the end token: decoding stops at its first use
    first = tokens.index(stop)
    monkeypatch.setattr(tokenizer, "end_token_id", stop)
    for batch in (1, 3):
        record = generation.generate(teacher, ["Hark!", "O"], sampling=Sampling(max_new_tokens=10, temperature=0),
                                     batch_size=batch)[0]
        assert record["ended"] is True and record["tokens"] == first + 1
        assert record["completion"] == _text(tokenizer, tokens[:first])


def _text(tokenizer, ids):
    text = np.asarray(tokenizer.detokenize(np.asarray([ids], np.int32))).reshape(-1)[0] if ids else ""
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def numpy_top_p(logits, p):
    keep = np.zeros_like(logits, bool)
    for b, row in enumerate(logits):
        order = np.argsort(-row)
        probabilities = np.exp(row[order] - row.max())
        probabilities /= probabilities.sum()
        total = 0.0
        for index, mass in zip(order, probabilities):
            keep[b, index] = True
            total += mass
            if total >= p:
                break
    return keep


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 0.999])
def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p(p):
    logits = np.random.default_rng(0).normal(size=(6, 40)).astype(np.float32) * 2
    kept = np.isfinite(generation.truncate_logits(logits, top_p=p).numpy())
    np.testing.assert_array_equal(kept, numpy_top_p(logits, p))


def test_top_k_then_top_p_renormalises_over_the_top_k():
    logits = np.random.default_rng(1).normal(size=(5, 30)).astype(np.float32)
    only_k = generation.truncate_logits(logits, top_k=7).numpy()
    assert (np.isfinite(only_k).sum(1) == 7).all()
    np.testing.assert_array_equal(np.isfinite(only_k), logits >= np.sort(logits, 1)[:, -7:-6])
    both = np.isfinite(generation.truncate_logits(logits, top_k=7, top_p=0.6).numpy())
    np.testing.assert_array_equal(both, numpy_top_p(np.where(np.isfinite(only_k), logits, -np.inf), 0.6))


def test_draws_follow_the_softmax_and_do_not_depend_on_the_batch():
    logits = np.log(np.asarray([[0.5, 0.3, 0.0001, 0.15, 0.0499]], np.float32))
    n = 20000
    tokens = generation.choose_tokens(tf.constant(np.repeat(logits, n, 0)), Sampling(seed=1), 1,
                                      tf.range(n), tf.zeros([n], tf.int32)).numpy()
    frequencies = np.bincount(tokens, minlength=5) / n
    np.testing.assert_allclose(frequencies, np.exp(logits[0]), atol=0.012)
    truncated = generation.choose_tokens(tf.constant(np.repeat(logits, n, 0)), Sampling(seed=1, top_k=2), 1,
                                         tf.range(n), tf.zeros([n], tf.int32)).numpy()
    np.testing.assert_allclose(np.bincount(truncated, minlength=5) / n, [0.625, 0.375, 0, 0, 0], atol=0.012)
    noise = generation.uniform_noise(7, tf.constant([3, 9, 4]), tf.constant([2, 2, 5])).numpy()
    alone = generation.uniform_noise(7, tf.constant([9]), tf.constant([2])).numpy()
    assert noise[1] == alone[0] and len(set(noise.tolist())) == 3
    many = generation.uniform_noise(0, tf.range(50000), tf.zeros([50000], tf.int32)).numpy()
    assert 0 < many.min() and many.max() < 1 and abs(many.mean() - 0.5) < 0.005
    np.testing.assert_allclose(np.histogram(many, bins=10, range=(0, 1))[0] / 50000, 0.1, atol=0.006)


def test_the_command_writes_shards_resumes_and_refuses_an_existing_out(preset, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)))
    out = tmp_path / "gen.jsonl"
    args = ["generate", "--teacher", preset, "--prompts", prompts, "--out", out, "--max-new-tokens", 5,
            "--samples-per-prompt", 2, "--verbose", 0]
    assert main([str(a) for a in args]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 8 and [r["id"] for r in lines] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert set(lines[0]) == {"prompt", "completion", "sample", "tokens", "ended", "mean_logprob", "id"}
    assert not os.path.exists(str(out) + ".parts")
    assert main([str(a) for a in args]) == 2 and "--resume" in capsys.readouterr().err
    assert main([str(a) for a in args + ["--batch-size", 3, "--out", tmp_path / "again.jsonl"]]) == 0
    again = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert same_lines(again, lines)


def test_resume_rewrites_only_the_missing_shards(teacher, tmp_path, monkeypatch):
    out = str(tmp_path / "gen.jsonl")
    sampling = Sampling(max_new_tokens=4, samples_per_prompt=2, seed=2)
    complete = generation.generate(teacher, PROMPTS, sampling=sampling)
    written = []
    real_write = generation.write_text

    def interrupted(path, text):
        if len(written) == 3:  # the manifest and two shards, then the run dies
            raise KeyboardInterrupt
        written.append(path)
        real_write(path, text)

    monkeypatch.setattr(generation, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generation.generate(teacher, PROMPTS, out=out, sampling=sampling, shard_samples=2)
    parts = out + ".parts"
    kept = {name: os.stat(os.path.join(parts, name)).st_mtime_ns for name in os.listdir(parts)}
    assert sorted(kept) == ["manifest.json", "shard-00000.jsonl", "shard-00001.jsonl"] and not os.path.exists(out)
    with pytest.raises(ValueError, match="--resume"):
        generation.generate(teacher, PROMPTS, out=out, sampling=sampling, shard_samples=2)
    monkeypatch.setattr(generation, "write_text", real_write)
    rewritten = []
    monkeypatch.setattr(generation, "write_text", lambda p, t: (rewritten.append(os.path.basename(p)), real_write(p, t)))
    generation.generate(teacher, PROMPTS, out=out, sampling=sampling, shard_samples=2, resume=True, batch_size=3)
    assert rewritten == ["shard-00002.jsonl", "shard-00003.jsonl", "gen.jsonl"]
    with open(out) as f:
        assert same_lines([json.loads(line) for line in f], complete)
    with pytest.raises(ValueError, match="complete"):
        generation.generate(teacher, PROMPTS, out=out, sampling=sampling, resume=True)


def test_a_resume_with_other_settings_is_refused(teacher, tmp_path, monkeypatch):
    out = str(tmp_path / "gen.jsonl")
    monkeypatch.setattr(generation, "_join", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        generation.generate(teacher, PROMPTS, out=out, sampling=Sampling(max_new_tokens=3), shard_samples=2)
    with pytest.raises(ValueError, match="other prompts, settings or teacher"):
        generation.generate(teacher, PROMPTS, out=out, sampling=Sampling(max_new_tokens=3, seed=1), resume=True,
                            shard_samples=2)


def test_training_on_a_generated_file_weighs_the_completion_tokens_only(teacher, tmp_path):
    out = tmp_path / "gen.jsonl"
    generation.generate(teacher, PROMPTS[:2], out=str(out), sampling=Sampling(max_new_tokens=6, temperature=0))
    tokenizer = teacher.preprocessor.tokenizer
    docs = causal_lm.read_documents(str(out))
    assert docs.paired
    start = generation.start_ids(teacher)
    x, y, w = causal_lm.token_windows(tokenizer, docs, 40, start)
    for row, (prompt, completion) in enumerate(docs.items):
        p, c = (list(np.asarray(tokenizer(t))) for t in (prompt, completion))
        assert x["token_ids"][row, :len(start) + len(p)].tolist() == start + p
        assert y[row][w[row] > 0].tolist() == c + [tokenizer.end_token_id]  # the completion and its end, nothing else
        assert w[row].sum() == len(c) + 1


def test_distill_lm_data_may_mix_sources(teacher, tmp_path):
    tokenizer = teacher.preprocessor.tokenizer
    (tmp_path / "mine.txt").write_text("To be or not to be, that is the question.\n" * 3)
    pairs = tmp_path / "gen.jsonl"
    pairs.write_text(json.dumps({"prompt": "Hark", "completion": " who goes"}) + "\n" +
                     json.dumps({"prompt": "O", "completion": " Romeo"}) + "\n")
    data = causal_lm.lm_data(tokenizer, [str(tmp_path / "mine.txt"), str(pairs)], 32,
                             validation=str(tmp_path / "mine.txt"))
    x, y, w = data.train
    mine = causal_lm.token_windows(tokenizer, causal_lm.read_documents(str(tmp_path / "mine.txt")), 32)
    assert len(y) == len(mine[1]) + 2 and data.documents["train"][-2:] == ["line 1", "line 2"]
    np.testing.assert_array_equal(w[:len(mine[1])], mine[2])  # your text: every token
    assert w[-1].sum() == len(b" Romeo") + 1  # generated pairs: the completion and its end token


@pytest.mark.parametrize("setup, flags, message", [
    ("empty", [], "holds no prompt"),
    ("latin1", [], "not UTF-8"),
    ("badjson", [], "line 2 is not JSON"),
    ("noprompt", [], "line 1 needs a string \"prompt\""),
    ("long", [], "line 1: a prompt of"),
    ("ok", ["--max-new-tokens", "0"], "--max-new-tokens must be"),
    ("ok", ["--temperature", "-1"], "--temperature must be"),
    ("ok", ["--top-p", "0"], "--top-p must be in"),
    ("ok", ["--top-k", "-2"], "--top-k must be"),
    ("ok", ["--samples-per-prompt", "0"], "--samples-per-prompt must be"),
    ("ok", ["--batch-size", "0"], "--batch-size must be"),
    ("ok", ["--out-txt"], "must name a .jsonl file"),
])
def test_bad_input_exits_2_in_one_line_and_writes_nothing(preset, tmp_path, capsys, setup, flags, message):
    prompts = tmp_path / ("prompts.txt" if setup in ("empty", "latin1", "long", "ok") else "prompts.jsonl")
    content = {"empty": b"\n  \n", "latin1": "caf\u00e9\n".encode("latin-1"), "badjson": b'{"prompt": "a"}\n{oops\n',
               "noprompt": b'{"text": "a"}\n', "long": b"x" * 60 + b"\n", "ok": b"Hark\n"}[setup]
    prompts.write_bytes(content)
    out = tmp_path / ("gen.txt" if "--out-txt" in flags else "gen.jsonl")
    flags = [f for f in flags if f != "--out-txt"]
    status = main(["generate", "--teacher", str(preset), "--prompts", str(prompts), "--out", str(out),
                   "--verbose", "0", *flags])
    err = capsys.readouterr().err.strip()
    assert status == 2 and message in err and len(err.splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == [prompts.name]


def test_a_missing_teacher_exits_2_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("Hark\n")
    status = main(["generate", "--teacher", str(tmp_path / "nowhere"), "--prompts", str(tmp_path / "prompts.txt"),
                   "--out", str(tmp_path / "gen.jsonl"), "--verbose", "0"])
    assert status == 2 and "is not a preset" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["prompts.txt"]


@pytest.mark.slow
def test_distill_lm_trains_on_your_text_and_a_generated_file_together(preset, tmp_path):
    (tmp_path / "mine.txt").write_text("To be or not to be, that is the question.\n" * 20)
    generated = tmp_path / "gen.jsonl"
    assert main(["generate", "--teacher", str(preset), "--prompts", str(tmp_path / "mine.txt"), "--out",
                 str(generated), "--max-new-tokens", "8", "--verbose", "0"]) == 0
    out = tmp_path / "run"
    assert main(["distill-lm", "--teacher", str(preset), "--student", "from-teacher:1", "--data",
                 str(tmp_path / "mine.txt"), "--data", str(generated), "--validation", str(tmp_path / "mine.txt"),
                 "--out", str(out), "--steps", "4", "--sequence-length", "32", "--batch-size", "4",
                 "--verbose", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["data"] == [str(tmp_path / "mine.txt"), str(generated)]
    assert len(metrics["documents"]["train"]) == 1 + 20  # one text document and twenty generated pairs
