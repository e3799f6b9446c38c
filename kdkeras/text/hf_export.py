"""A distilled KerasHub causal LM written in Hugging Face's layout (``config.json``, safetensors, tokenizer files).

:func:`export_hf` writes a folder that transformers' ``AutoModelForCausalLM``
/ ``AutoTokenizer`` and KerasHub's own Hugging Face loader read back to the
same token ids and logits. GPT-2, Llama 3, Gemma, Mistral and Qwen2 go
through KerasHub's exporter (its GPT-2 config is completed with
``architectures`` and ``n_inner``, which its own loader needs); Qwen3, which
KerasHub 0.32 cannot export, is written here: a Llama-like decoder with
per-head query and key RMS norms, mapped weight by weight as KerasHub's
Qwen3 converter reads them. A BERT text classifier (which KerasHub cannot
export) is written here as a ``BertForSequenceClassification`` with its
WordPiece vocabulary and class names. Another architecture is refused
(:func:`check_exportable`) before any training.
"""

import json
import os

import numpy as np

__all__ = ["CLASSIFIERS", "SUPPORTED", "check_exportable", "export_hf"]

#: Backbone class -> the Hugging Face ``architectures`` entry of its causal LM.
SUPPORTED = {
    "GPT2Backbone": "GPT2LMHeadModel",
    "Llama3Backbone": "LlamaForCausalLM",
    "GemmaBackbone": "GemmaForCausalLM",
    "MistralBackbone": "MistralForCausalLM",
    "QwenBackbone": "Qwen2ForCausalLM",
    "Qwen3Backbone": "Qwen3ForCausalLM",
}


#: Backbone class -> the Hugging Face ``architectures`` entry of its text classifier.
CLASSIFIERS = {"BertBackbone": "BertForSequenceClassification"}


def _table(model):
    import keras_hub

    return CLASSIFIERS if isinstance(model, keras_hub.models.TextClassifier) else SUPPORTED


def check_exportable(model):
    """A ``ValueError`` naming the supported architectures when ``model``'s cannot be exported."""
    name, table = type(model.backbone).__name__, _table(model)
    if name not in table:
        supported = ", ".join(n.replace("Backbone", "") for n in table)
        raise ValueError(f"--export hf supports {supported}; this model is a {name.replace('Backbone', '')}.")


def export_hf(model, path, classes=None):
    """Writes ``model`` (a KerasHub ``CausalLM``, or a BERT ``TextClassifier`` whose class names are
    ``classes``, with its preprocessor) to the folder ``path``; returns ``path``."""
    check_exportable(model)
    os.makedirs(path, exist_ok=True)
    name = type(model.backbone).__name__
    if _table(model) is CLASSIFIERS:
        _export_bert_classifier(model, path, classes)
        return path
    if name == "Qwen3Backbone":
        _export_qwen3(model, path)
    else:
        model.export_to_transformers(path)
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config.setdefault("architectures", [SUPPORTED[name]])
    if name == "GPT2Backbone":
        config.setdefault("n_inner", int(model.backbone.intermediate_dim))
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    return path


def _to_hf(kernel, hf_shape):
    """A Keras kernel laid out as Hugging Face's ``[out, in]`` weight of shape ``hf_shape``."""
    return np.ascontiguousarray(np.transpose(np.reshape(kernel, (hf_shape[1], hf_shape[0]))))


def _export_qwen3(model, path):
    from safetensors.numpy import save_file

    bb = model.backbone
    hidden, heads, kv_heads, head_dim = int(bb.hidden_dim), int(bb.num_query_heads), int(bb.num_key_value_heads), \
        int(bb.head_dim)
    embedding = bb.get_layer("token_embedding")
    tensors = {"model.embed_tokens.weight": embedding.embeddings.numpy(),
               "model.norm.weight": bb.get_layer("sequence_output_layernorm").scale.numpy()}
    if not bb.tie_word_embeddings:
        tensors["lm_head.weight"] = np.transpose(embedding.reverse_embeddings.numpy())
    for i in range(int(bb.num_layers)):
        layer = bb.get_layer(f"transformer_layer_{i}")
        attention, prefix = layer._self_attention_layer, f"model.layers.{i}."
        for hf_name, kernel, shape in (("self_attn.q_proj", attention._query_dense.kernel, (heads * head_dim, hidden)),
                                       ("self_attn.k_proj", attention._key_dense.kernel, (kv_heads * head_dim, hidden)),
                                       ("self_attn.v_proj", attention._value_dense.kernel,
                                        (kv_heads * head_dim, hidden)),
                                       ("self_attn.o_proj", attention._output_dense.kernel, (hidden, heads * head_dim)),
                                       ("mlp.up_proj", layer._feedforward_intermediate_dense.kernel,
                                        (int(bb.intermediate_dim), hidden)),
                                       ("mlp.gate_proj", layer._feedforward_gate_dense.kernel,
                                        (int(bb.intermediate_dim), hidden)),
                                       ("mlp.down_proj", layer._feedforward_output_dense.kernel,
                                        (hidden, int(bb.intermediate_dim)))):
            tensors[f"{prefix}{hf_name}.weight"] = _to_hf(kernel.numpy(), shape)
        tensors[f"{prefix}self_attn.q_norm.weight"] = attention._query_dense_layer_norm.scale.numpy()
        tensors[f"{prefix}self_attn.k_norm.weight"] = attention._key_dense_layer_norm.scale.numpy()
        tensors[f"{prefix}input_layernorm.weight"] = layer._self_attention_layernorm.scale.numpy()
        tensors[f"{prefix}post_attention_layernorm.weight"] = layer._feedforward_layernorm.scale.numpy()
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
              os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    tokenizer = model.preprocessor.tokenizer
    config = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": int(bb.vocabulary_size),
        "hidden_size": hidden, "intermediate_size": int(bb.intermediate_dim), "num_hidden_layers": int(bb.num_layers),
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "rms_norm_eps": float(bb.layer_norm_epsilon), "rope_theta": float(bb.rope_max_wavelength),
        "tie_word_embeddings": bool(bb.tie_word_embeddings), "hidden_act": "silu", "attention_bias": False,
        "use_sliding_window": False, "sliding_window": None, "max_position_embeddings": 32768,
        "max_window_layers": int(bb.num_layers), "torch_dtype": "float32",
        "bos_token_id": _token_id(tokenizer, "start"), "eos_token_id": _token_id(tokenizer, "end"),
    }
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    _write_bpe_tokenizer(tokenizer, path)


def _token_id(tokenizer, which):
    value = getattr(tokenizer, f"{which}_token_id", None)
    return None if value is None else int(value)


def _write_bpe_tokenizer(tokenizer, path):
    """``tokenizer.json`` (a byte-level BPE: vocabulary, merges as pairs, special tokens) and its config."""
    vocabulary = dict(tokenizer.vocabulary)
    special = set(getattr(tokenizer, "unsplittable_tokens", None) or [])
    added = [{"id": int(vocabulary[t]), "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t in sorted(special, key=lambda t: vocabulary[t])]
    merges = [m.split(" ") for m in tokenizer.merges]
    document = {
        "version": "1.0", "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                          "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "vocab": {t: int(i) for t, i in vocabulary.items() if t not in special}, "merges": merges},
    }
    with open(os.path.join(path, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(document, f, ensure_ascii=False)
    end = getattr(tokenizer, "end_token", None)
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "Qwen2Tokenizer", "eos_token": end, "pad_token": end,
                   "model_max_length": 32768}, f, ensure_ascii=False)


def _layer_norm(tensors, key, layer):
    tensors[f"{key}.weight"], tensors[f"{key}.bias"] = layer.gamma.numpy(), layer.beta.numpy()


def _dense(tensors, key, layer, hf_shape):
    tensors[f"{key}.weight"] = _to_hf(layer.kernel.numpy(), hf_shape)
    tensors[f"{key}.bias"] = np.reshape(layer.bias.numpy(), (hf_shape[0],))


def _export_bert_classifier(model, path, classes):
    """A KerasHub ``BertTextClassifier`` as Hugging Face's ``BertForSequenceClassification`` (the inverse of
    KerasHub's BERT converter) with ``vocab.txt`` and the tokenizer's config."""
    from safetensors.numpy import save_file

    bb = model.backbone
    width, inner, count = int(bb.hidden_dim), int(bb.intermediate_dim), int(model.num_classes)
    tensors = {"bert.embeddings.word_embeddings.weight": bb.get_layer("token_embedding").embeddings.numpy(),
               "bert.embeddings.position_embeddings.weight":
                   bb.get_layer("position_embedding").position_embeddings.numpy(),
               "bert.embeddings.token_type_embeddings.weight": bb.get_layer("segment_embedding").embeddings.numpy()}
    _layer_norm(tensors, "bert.embeddings.LayerNorm", bb.get_layer("embeddings_layer_norm"))
    for i in range(int(bb.num_layers)):
        block, prefix = bb.get_layer(f"transformer_layer_{i}"), f"bert.encoder.layer.{i}."
        attention = block._self_attention_layer
        for hf_name, dense in (("attention.self.query", attention.query_dense), ("attention.self.key",
                               attention.key_dense), ("attention.self.value", attention.value_dense),
                               ("attention.output.dense", attention.output_dense)):
            _dense(tensors, prefix + hf_name, dense, (width, width))
        _layer_norm(tensors, prefix + "attention.output.LayerNorm", block._self_attention_layer_norm)
        _dense(tensors, prefix + "intermediate.dense", block._feedforward_intermediate_dense, (inner, width))
        _dense(tensors, prefix + "output.dense", block._feedforward_output_dense, (width, inner))
        _layer_norm(tensors, prefix + "output.LayerNorm", block._feedforward_layer_norm)
    _dense(tensors, "bert.pooler.dense", bb.get_layer("pooled_dense"), (width, width))
    _dense(tensors, "classifier", model.output_dense, (count, width))
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
              os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    names = [str(c) for c in classes] if classes is not None and len(classes) == count else \
        [f"LABEL_{i}" for i in range(count)]
    dropout = float(getattr(bb, "dropout", 0.1))
    config = {
        "architectures": ["BertForSequenceClassification"], "model_type": "bert", "vocab_size": int(bb.vocabulary_size),
        "hidden_size": width, "num_hidden_layers": int(bb.num_layers), "num_attention_heads": int(bb.num_heads),
        "intermediate_size": inner, "max_position_embeddings": int(bb.max_sequence_length),
        "type_vocab_size": int(bb.num_segments), "layer_norm_eps": 1e-12,
        # KerasHub's BERT computes the tanh approximation of GELU, which is transformers' "gelu_new".
        "hidden_act": "gelu_new", "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout,
        "initializer_range": 0.02, "pad_token_id": 0, "position_embedding_type": "absolute",
        "problem_type": "single_label_classification", "torch_dtype": "float32",
        "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)},
    }
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tokenizer = model.preprocessor.tokenizer
    with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in tokenizer.get_vocabulary()))
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                "mask_token": "[MASK]"}
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        # transformers strips accents whenever it lowercases unless told; KerasHub's BERT tokenizer does not.
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": bool(getattr(tokenizer, "lowercase", False)),
                   "strip_accents": bool(getattr(tokenizer, "strip_accents", False)),
                   "tokenize_chinese_chars": bool(getattr(tokenizer, "split_on_cjk", True)),
                   "model_max_length": int(bb.max_sequence_length), **specials}, f)
    with open(os.path.join(path, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(specials, f)
