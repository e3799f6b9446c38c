"""Applies deliberate bugs to a copy of kdkeras, one at a time, and shows that the tests catch each.

    python tests/helpers/mutations.py            # every mutation (a few minutes on 2 CPU cores)
    python tests/helpers/mutations.py --list

For each mutation the package is copied to a temporary directory, one line of
its source is replaced, and the named tests run against the copy (it comes
first on ``PYTHONPATH``). A mutation is *caught* when those tests fail. The
script exits non-zero if any mutation survives, or if a replacement no longer
matches the source (the mutation list must follow the code).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name: (file in kdkeras/, original text, mutated text, tests that must fail)
MUTATIONS = {
    "online teacher called in training mode": (
        "distiller.py",
        'logits, features = self._forward(self.teacher, "teacher_layers", x, training=False)',
        'logits, features = self._forward(self.teacher, "teacher_layers", x, training=True)',
        ["tests/test_teacher_mode.py::test_the_online_teacher_runs_in_inference_mode",
         "tests/test_teacher_mode.py::test_feature_distillation_captures_the_teachers_features_in_inference_mode"],
    ),
    "ensemble members called in training mode": (
        "teachers.py",
        'outputs = [keras.ops.cast(m(inputs, training=False), "float32") for m in self.members]',
        'outputs = [keras.ops.cast(m(inputs, training=True), "float32") for m in self.members]',
        ["tests/test_teacher_mode.py::test_ensemble_members_and_probability_teachers_run_in_inference_mode"],
    ),
    "probability teacher called in training mode": (
        "teachers.py",
        'probabilities = keras.ops.cast(self.model(inputs, training=False), "float32")',
        'probabilities = keras.ops.cast(self.model(inputs, training=True), "float32")',
        ["tests/test_teacher_mode.py::test_ensemble_members_and_probability_teachers_run_in_inference_mode"],
    ),

    "token loss divided by this replica's real tokens": (
        "terms.py",
        "gradient_loss = tf.math.divide_no_nan(weighted_sum, global_n)",
        "gradient_loss = tf.math.divide_no_nan(weighted_sum, local_n) / tf.distribute.get_replica_context()"
        ".num_replicas_in_sync",
        ["tests/test_language_models.py::test_replicas_with_different_real_token_counts_update_as_one_device"],
    ),
    "chunked token loss divided by this replica's real tokens": (
        "token_chunks.py",
        "coefficients = [tf.math.divide_no_nan(term.current_weight(), global_n) for term in chunkable.values()]",
        "coefficients = [tf.math.divide_no_nan(term.current_weight(), tf.reduce_sum(token_weights("
        "batch.sample_weight, batch.student_logits))) / 2.0 for term in chunkable.values()]",
        ["tests/test_token_chunks.py::test_replicas_with_uneven_real_tokens_update_as_one_device_over_chunks"],
    ),
    "the checkpoint's rms_norm_eps not passed through": (
        "text/causal_lm.py",
        "    return with_checkpoint_norm_epsilon(model, preset)",
        "    return model",
        ["tests/test_distill_lm.py::test_a_llama3_checkpoints_rms_norm_epsilon_is_kept"],
    ),
    "merges of tokenizer.json dropped": (
        "text/causal_lm.py",
        '            f.write("#version: 0.2\\n" + "".join(m + "\\n" for m in merges))',
        '            f.write("#version: 0.2\\n")',
        ["tests/test_distill_lm.py::test_a_gpt2_checkpoint_with_only_tokenizer_json_loads"],
    ),
    "Qwen3 export without the transpose to [out, in]": (
        "text/hf_export.py",
        "    return np.ascontiguousarray(np.transpose(np.reshape(kernel, (hf_shape[1], hf_shape[0]))))",
        "    return np.ascontiguousarray(np.reshape(kernel, hf_shape))",
        ["tests/test_distill_lm.py::test_a_student_exported_in_hugging_face_layout_reads_back_to_the_same_ids_and_logits"],
    ),
    "BERT export: classifier head not transposed": (
        "text/hf_export.py",
        '    _dense(tensors, "classifier", model.output_dense, (count, width))',
        '    tensors["classifier.weight"], tensors["classifier.bias"] = model.output_dense.kernel.numpy(), '
        'model.output_dense.bias.numpy()',
        ["tests/test_distill_classifier.py::test_the_student_preset_predicts_raw_text_and_its_metrics_are_recomputed_independently"],
    ),
    "BERT export: the feed-forward layer norm written as the attention's": (
        "text/hf_export.py",
        '        _layer_norm(tensors, prefix + "output.LayerNorm", block._feedforward_layer_norm)',
        '        _layer_norm(tensors, prefix + "output.LayerNorm", block._self_attention_layer_norm)',
        ["tests/test_distill_classifier.py::test_the_student_preset_predicts_raw_text_and_its_metrics_are_recomputed_independently"],
    ),
    "distill-classifier: string labels read as their position in the file": (
        "text/encoder_job.py",
        "        if isinstance(label, str) and label in index:\n            out.append(index[label])",
        "        if isinstance(label, str) and label in index:\n            out.append(len(out) % len(classes))",
        ["tests/test_distill_classifier.py::test_a_hugging_face_teacher_keeps_its_head_and_class_names",
         "tests/test_distill_classifier.py::test_labels_are_names_or_indices_and_others_are_named_in_the_error"],
    ),
    "distill-classifier: Hugging Face head not read": (
        "text/encoder_job.py",
        "        model.output_dense.set_weights([np.transpose(kernel), bias])",
        "        pass",
        ["tests/test_distill_classifier.py::test_a_hugging_face_teacher_keeps_its_head_and_class_names"],
    ),
    "distill-classifier: hints always projected": (
        "text/encoder_job.py",
        "        hint_projection = int(student.backbone.hidden_dim) != int(teacher.backbone.hidden_dim)",
        "        hint_projection = True",
        ["tests/test_distill_classifier.py::test_hints_are_projected_only_where_the_widths_differ"],
    ),
    "distill-classifier: the teacher's logits not learned (alpha 1)": (
        "text/encoder_job.py",
        '                  distillation_loss_fn="kl", alpha=recipe.alpha, temperature=recipe.temperature)',
        '                  distillation_loss_fn="kl", alpha=1.0, temperature=recipe.temperature)',
        ["tests/test_distill_classifier.py::test_with_alpha_0_the_student_follows_the_teacher_not_the_labels"],
    ),
    "distill-classifier: a new head not seeded": (
        "text/encoder_job.py",
        "    keras.utils.set_random_seed(recipe.seed)  # a new head (or a projection) starts from the seed's weights",
        "    pass",
        ["tests/test_distill_classifier.py::test_a_backbone_student_gets_the_same_seeded_head_every_run"],
    ),
    "BERT vocab.txt from tokenizer.json in name order": (
        "text/causal_lm.py",
        '                f.write("".join(t + "\\n" for t in sorted(model["vocab"], key=model["vocab"].get)))',
        '                f.write("".join(t + "\\n" for t in model["vocab"]))',
        ["tests/test_distill_classifier.py::test_a_bert_checkpoint_with_only_tokenizer_json_loads"],
    ),
    "Hugging Face BERT tokenizer: accents kept where transformers strips them": (
        "text/encoder_job.py",
        '    tokenizer.strip_accents = bool(settings["do_lower_case"] if strip is None else strip)',
        '    tokenizer.strip_accents = bool(strip)',
        ["tests/test_distill_classifier.py::test_a_hugging_face_tokenizer_strips_accents_as_its_config_says"],
    ),
    "distill-classifier: the held-out texts overlap the training texts": (
        "text/encoder_job.py",
        "    return np.sort(order[held:]), np.sort(order[:held])",
        "    return np.sort(order), np.sort(order[:held])",
        ["tests/test_distill_classifier.py::test_csv_and_jsonl_read_alike_and_the_split_is_seeded"],
    ),
    "padding mask ignored without sample_weight": (
        "language.py",
        "    if isinstance(x, dict) and PADDING_MASK_KEY in x:\n        return tf.cast(x[PADDING_MASK_KEY], tf.float32)",
        "    if False:\n        pass",
        ["tests/test_language_models.py::test_every_term_is_the_masked_mean_over_real_tokens"],
    ),
    "top-k tail dropped (top k renormalised)": (
        "losses.py",
        "    return (tf.concat([log_pt, teacher_tail[..., None]], -1), tf.concat([log_ps, student_tail[..., None]], -1), t)",
        "    return (tf.nn.log_softmax(log_pt), tf.nn.log_softmax(log_ps), t)",
        ["tests/test_language_models.py::test_top_k_losses_treat_the_tail_as_one_bucket"],
    ),
    "on-policy loss also on the prompt": (
        "sampling.py",
        "generated = tf.logical_and(positions >= (prompt - 1)[:, None], positions < (stop - 1)[:, None])",
        "generated = positions < (stop - 1)[:, None]",
        ["tests/test_language_models.py::test_sampled_continuations_keep_prompts_and_weigh_generated_tokens_only"],
    ),
    "on-policy draws not keyed by the step": (
        "sampling.py",
        "key = uniform_noise_key(policy.seed, step)",
        "key = uniform_noise_key(policy.seed, 0)",
        ["tests/test_language_models.py::test_sampled_continuations_keep_prompts_and_weigh_generated_tokens_only"],
    ),
    "vocabulary_size ignored by the losses": (
        "token_chunks.py",
        "    return z if vocabulary_size is None else z[..., :vocabulary_size]",
        "    return z",
        ["tests/test_language_models.py::test_padded_vocabularies_need_vocabulary_size_and_compare_its_first_entries"],
    ),
    "generalized JSD mixture weights swapped": (
        "losses.py",
        "        log_m = _log_mixture(log_pt, log_ps, beta)",
        "        log_m = _log_mixture(log_pt, log_ps, 1.0 - beta)",
        ["tests/test_language_models.py::test_lm_losses_match_numpy_per_token"],
    ),

    "steps per call that do not divide the epoch": (
        "recipe.py",
        "return max(d for d in range(1, min(self.steps_per_execution, steps) + 1) if steps % d == 0)",
        "return self.steps_per_execution",
        ["tests/test_budget_and_split.py::test_several_steps_per_call_make_the_same_updates_and_epochs"],
    ),
    "tune scores its trials on the test split": (
        "cli/tune.py",
        "tuner.search(train, validation_data=val, verbose=args.verbose)",
        "tuner.search(train, validation_data=test, verbose=args.verbose)",
        ["tests/test_tune.py::test_command_scores_trials_on_validation_and_tests_the_chosen_student_once"],
    ),
    "tune trials continue from the previous trial's weights": (
        "tuning.py",
        "        model.set_weights(self._initial_weights)\n",
        "        model = self.student\n",
        ["tests/test_tune.py::test_every_trial_starts_from_the_students_weights_with_its_own_settings"],
    ),
    "hard-label loss against the teacher's top class": (
        "terms.py",
        "values = per_example_loss(self.loss_fn, batch.labels, batch.student_logits)",
        "values = per_example_loss(self.loss_fn, tf.argmax(batch.teacher_logits, -1), batch.student_logits)",
        ["tests/test_distiller.py::test_hard_label_loss_uses_the_true_labels_not_the_teachers_guess"],
    ),
    "labels not passed to DKD": (
        "terms.py",
        "self._takes_labels = losses_module.takes_labels(loss_fn)",
        "self._takes_labels = False",
        ["tests/test_losses.py::test_distiller_passes_the_true_labels_to_dkd"],
    ),
    "cache shuffles the logits apart from their images": (
        "data/cache.py",
        "return (cached_batch(x, tf.concat(parts, 0)), y, *w)",
        "return (cached_batch(x, tf.random.shuffle(tf.concat(parts, 0), seed=1)), y, *w)",
        ["tests/test_distiller.py::test_shuffled_cache_keeps_image_logits_and_label_together"],
    ),
    "per-replica mean instead of the global batch": (
        "terms.py",
        "global_n = _distribute.global_batch_size(local_n)",
        "global_n = local_n",
        ["tests/test_distribute.py::test_two_replica_mirrored_step_matches_one_device",
         "tests/test_language_models.py::test_replicas_with_different_real_token_counts_update_as_one_device"],
    ),
    "KL without the T² factor": (
        "losses.py",
        "    return _non_negative(tf.square(t) * _kl(log_p, log_q))",
        "    return _non_negative(_kl(log_p, log_q))",
        ["tests/test_losses.py"],
    ),
    "KL with its two distributions swapped inside the log (negative, hidden by the clamp)": (
        "losses.py",
        "tf.zeros_like(p), p * (log_p - log_q)), axis=-1)",
        "tf.zeros_like(p), p * (log_q - log_p)), axis=-1)",
        ["tests/test_properties.py::test_the_clamp_only_hides_rounding"],
    ),
    "clamp that cuts the gradient where the value is clamped": (
        "losses.py",
        "return divergence + tf.stop_gradient(tf.maximum(divergence, 0.0) - divergence)",
        "return tf.maximum(divergence, 0.0)",
        ["tests/test_properties.py::test_the_clamp_keeps_the_gradient_of_the_raw_value"],
    ),
    "a Keras loss with optional arguments taken for a kdkeras loss": (
        "losses.py",
        "required = [p for p in params.values() if p.kind in kinds and p.default is inspect.Parameter.empty]",
        "required = [p for p in params.values() if p.kind in kinds]",
        ["tests/test_api_contracts.py::test_two_argument_keras_loss_is_applied_to_the_softened_distributions"],
    ),
    "prediction plot marks the right predictions instead of the wrong ones": (
        "plotting.py",
        'f"{name}: {names[p[i]]}" + ("" if ok else "  ✗"),',
        'f"{name}: {names[p[i]]}" + ("  ✗" if ok else ""),',
        ["tests/test_plotting_and_evaluation.py::test_plot_predictions_marks_mistakes"],
    ),
    "the main job ignores the step budget (always 100 epochs)": (
        "recipe.py",
        'return max(1, round(getattr(self, f"{stage}_steps") / self.steps_per_epoch(num_examples)))',
        "return 100",
        ["tests/test_budget_and_split.py"],
    ),
    "validation split that leaks training digits": (
        "data/pipeline.py",
        "    return (x[kept], y[kept]), (x[held_out], y[held_out])",
        "    return (x, y), (x[held_out], y[held_out])",
        ["tests/test_budget_and_split.py::test_validation_split_is_stratified_seeded_and_disjoint_from_test"],
    ),
    "chunked gradient without the token weights": (
        "token_chunks.py",
        "values, d_z = _values_and_logit_gradient(terms, piece, z_s, w[:, None] * coefficients * scale, closed_forms)",
        "values, d_z = _values_and_logit_gradient(terms, piece, z_s, coefficients[None] * scale + 0 * w[:, None],"
        " closed_forms)",
        ["tests/test_token_chunks.py::test_the_chunked_gradient_is_the_analytic_gradient_of_the_loss"],
    ),
    "chunks drop the teacher's offset": (
        "token_chunks.py",
        "t_parts = tf.nest.map_structure(lambda t: tf.slice(t, _begin(start, t), _size(size, t)), flat_teacher)",
        "t_parts = tf.nest.map_structure(lambda t: tf.slice(t, _begin(0, t), _size(size, t)), flat_teacher)",
        ["tests/test_token_chunks.py::test_chunked_values_are_the_numpy_masked_means"],
    ),
    "fused-head metrics weigh every chunk as one sample": (
        "token_chunks.py",
        "metrics.update_state(tf.slice(labels, [start, 0], [size, 1]), z[:, None, :], w)",
        "metrics.update_state(tf.reshape(tf.slice(labels, [start, 0], [size, 1]), [1, -1]), z[None], w if w is None else tf.reshape(w, [1, -1]))",
        ["tests/test_fused_head.py::test_the_fused_head_gives_the_unfused_values_and_step"],
    ),
    "sampling never stops at the end token": (
        "sampling.py",
        "stop = tf.where(ended, p + 1, stop)",
        "stop = stop",
        ["tests/test_sampling.py::test_sampling_stops_at_the_end_token_which_keeps_its_weight"],
    ),
    "the end token loses its weight": (
        "sampling.py",
        "generated = tf.logical_and(positions >= (prompt - 1)[:, None], positions < (stop - 1)[:, None])",
        "generated = tf.logical_and(positions >= (prompt - 1)[:, None], positions < (stop - 2)[:, None])",
        ["tests/test_sampling.py::test_sampling_stops_at_the_end_token_which_keeps_its_weight"],
    ),
    "per-token hint terms averaged per replica": (
        "terms.py",
        "return tf.math.divide_no_nan(summed, local), tf.math.divide_no_nan(summed, _distribute.global_batch_size(local))",
        "return tf.math.divide_no_nan(summed, local), tf.math.divide_no_nan(summed, local) / tf.cast("
        "tf.distribute.get_replica_context().num_replicas_in_sync, tf.float32)",
        ["tests/test_sequence_hints.py::test_uneven_replicas_update_as_one_device_with_sequence_hints"],
    ),
    "attention relations over padded keys": (
        "features.py",
        "    scores = tf.where(mask[:, None], scores, tf.constant(-1e9, tf.float32))\n",
        "\n",
        ["tests/test_attention_transfer.py::test_relations_are_the_numpy_kl_per_query_over_real_keys"],
    ),
    "chunked gradient not rescaled by the upstream over the loss scale": (
        "token_chunks.py",
        "factor = tf.zeros([]) if d_loss is None else tf.cast(d_loss, tf.float32) / scale",
        "factor = tf.ones([])",
        ["tests/test_token_chunks.py::test_the_chunked_gradient_is_the_analytic_gradient_of_the_loss"],
    ),
    "closed-form KL gradient without the temperature factor": (
        "losses.py",
        "return tf.maximum(tf.square(t) * kl, 0.0), t * (p_s - p_t)",
        "return tf.maximum(tf.square(t) * kl, 0.0), p_s - p_t",
        ["tests/test_token_chunks.py::test_the_chunked_gradient_is_the_analytic_gradient_of_the_loss",
         "tests/test_token_chunks.py::test_chunks_give_the_unchunked_values_and_step"],
    ),
    "closed-form cross-entropy gradient without the one-hot": (
        "losses.py",
        "return tf.reshape(values, shape[:-1]), tf.reshape(gradient, shape)",
        "return tf.reshape(values, shape[:-1]), tf.reshape(tf.nn.softmax(z), shape)",
        ["tests/test_token_chunks.py::test_chunks_give_the_unchunked_values_and_step",
         "tests/test_fused_head.py::test_the_fused_head_gives_the_unfused_values_and_step"],
    ),
    "on-policy rows share one draw": (
        "sampling.py",
        "    rows = tf.range(batch)\n",
        "    rows = tf.zeros([batch], tf.int32)\n",
        ["tests/test_sampling.py::test_rows_with_the_same_prompt_draw_different_continuations"],
    ),
    "fused head without the logit soft cap": (
        "token_chunks.py",
        "            logits = tf.tanh(logits / cap) * cap",
        "            logits = logits",
        ["tests/test_fused_head.py::test_the_fused_head_gives_the_unfused_values_and_step"],
    ),
    "KV cache written one position late": (
        "sampling.py",
        "logits, _, cache = model.call_with_cache(tf.slice(ids, [0, p - 1], [-1, 1]), cache, p - 1)",
        "logits, _, cache = model.call_with_cache(tf.slice(ids, [0, p - 1], [-1, 1]), cache, p)",
        ["tests/test_sampling.py::test_the_kv_cache_gives_the_full_pass_logits_at_every_position"],
    ),
    "top-p keeps the token that passes p (inclusive mass)": (
        "text/generation.py",
        "above = tf.cumsum(probabilities, axis=-1, exclusive=True)",
        "above = tf.cumsum(probabilities, axis=-1)",
        ["tests/test_generate.py::test_top_p_keeps_the_smallest_set_whose_mass_reaches_p"],
    ),
    "generate's draws keyed by the batch row": (
        "text/generation.py",
        "token = choose_tokens(logits, sampling, sampling.seed, samples, p - prompt)",
        "token = choose_tokens(logits, sampling, sampling.seed, tf.range(tf.shape(samples)[0]), p - prompt)",
        ["tests/test_generate.py::test_the_same_seed_writes_the_same_lines_whatever_the_batch_size"],
    ),
    "generate keeps the end token in the completion": (
        "text/generation.py",
        "texts = _detokenize(self.tokenizer, [m[:-1] if ended[i] else m for i, m in enumerate(made)])",
        "texts = _detokenize(self.tokenizer, made)",
        ["tests/test_generate.py::test_the_end_token_stops_a_sample_and_is_not_in_its_completion"],
    ),
    "generated pairs weigh their prompt tokens too": (
        "text/causal_lm.py",
        "            w[max(len(prompt) - 1, 0):] = 1.0",
        "            w[:] = 1.0",
        ["tests/test_generate.py::test_training_on_a_generated_file_weighs_the_completion_tokens_only"],
    ),
}


def run_mutation(name, timeout):
    path, original, mutated, tests = MUTATIONS[name]
    with tempfile.TemporaryDirectory(prefix="kdkeras-mutant-") as tmp:
        shutil.copytree(os.path.join(ROOT, "kdkeras"), os.path.join(tmp, "kdkeras"))
        target = os.path.join(tmp, "kdkeras", path)
        with open(target, encoding="utf-8") as f:
            source = f.read()
        if source.count(original) != 1:
            return "stale", f"the text to replace is not found exactly once in kdkeras/{path}"
        with open(target, "w", encoding="utf-8") as f:
            f.write(source.replace(original, mutated))
        env = dict(os.environ, PYTHONPATH=tmp + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
        # Run from the copy's directory: `python -m` puts the working directory first on sys.path,
        # so the mutated package is the one imported (checked below).
        check = [sys.executable, "-c", "import kdkeras, os; print(os.path.dirname(kdkeras.__file__))"]
        imported = subprocess.run(check, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        if imported.stdout.strip().splitlines()[-1:] != [os.path.join(tmp, "kdkeras")]:
            return "error", f"the copy was not the package imported: {imported.stdout[-300:]}"
        node_ids = [os.path.join(ROOT, t) for t in tests]
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                               "-m", "slow or not slow", *node_ids],  # the named tests, slow ones included
                              cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        last = (proc.stdout.strip().splitlines() or [""])[-1]
        return ("caught" if proc.returncode == 1 else "survived" if proc.returncode == 0 else "error"), last


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--only", nargs="+", choices=list(MUTATIONS), help="run only these")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per mutation")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(MUTATIONS))
        return 0
    failures = 0
    for name in args.only or MUTATIONS:
        verdict, detail = run_mutation(name, args.timeout)
        failures += verdict != "caught"
        print(f"{verdict:8s} {name}: {detail}", flush=True)
    print(f"{len(args.only or MUTATIONS) - failures} caught, {failures} not caught")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
