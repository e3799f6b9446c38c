"""Generated tokens a second: ``kdkeras.text.generation.generate`` against KerasHub's own ``CausalLM.generate``.

Same model, batch, prompt length and sampler (random sampling at temperature 1; or top-k), strings in and
strings out for both, side by side in one process: after a warm-up call of each (tracing), the two are
timed in alternation for ``--rounds`` rounds and the medians compared; twice, against KerasHub as it compiles by
default (``jit_compile="auto"``: no XLA on a CPU-only machine) and with ``compile(jit_compile=True)``. Tokens are the tokens each actually
generated (KerasHub's with ``stop_token_ids=None`` runs to the full length; kdkeras's stop at the end token,
which these models rarely draw).

    python scripts/benchmark_generate.py --teacher runs/realistic/teacher --json docs/results/generate_speed.json

Without ``--teacher`` (or in addition to it) two GPT-2 models built from configs are measured: the byte
vocabulary (258 tokens) and GPT-2's real one (50,257 tokens; a byte tokenizer padded with placeholder tokens).
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def gpt2(vocabulary, layers, width, length, seed=0):
    import keras
    import keras_hub

    import kdkeras

    tokenizer = kdkeras.language.byte_level_gpt2_tokenizer()
    if vocabulary > tokenizer.vocabulary_size():
        table = dict(tokenizer.vocabulary)
        for i in range(len(table), vocabulary):
            table[f"<placeholder{i}>"] = i
        tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=table, merges=["Ġ t"])
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=vocabulary, num_layers=layers, num_heads=4,
                                             hidden_dim=width, intermediate_dim=4 * width, max_sequence_length=length)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=length)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


def measure(model, name, batch, prompt_chars, new_tokens, rounds, top_k):
    import keras_hub

    from kdkeras.text import generation

    text = "Now, fair Hippolyta, our nuptial hour draws on apace; four happy days bring in another moon"
    prompts = [(text * 3)[i:i + prompt_chars] for i in range(batch)]  # the same length, different text
    length = len(generation.start_ids(model)) + max(len(model.preprocessor.tokenizer(p)) for p in prompts) + new_tokens
    sampling = generation.Sampling(max_new_tokens=new_tokens, top_k=top_k, seed=0)

    def ours():
        records = generation.generate(model, prompts, sampling=sampling, batch_size=batch)
        return sum(r["tokens"] for r in records)

    def theirs():
        model.generate(prompts, max_length=length, stop_token_ids=None)
        return batch * new_tokens

    row = {"model": name, "vocabulary": int(model.backbone.vocabulary_size), "layers": int(model.backbone.num_layers),
           "width": int(model.backbone.hidden_dim), "batch": batch, "prompt_tokens": length - new_tokens,
           "new_tokens": new_tokens, "sampler": f"top-{top_k}" if top_k else "random (temperature 1)"}
    for label, jit in (("keras_hub", "auto"), ("keras_hub_xla", True)):
        sampler = keras_hub.samplers.TopKSampler(k=top_k, seed=0) if top_k else keras_hub.samplers.RandomSampler(seed=0)
        model.compile(sampler=sampler, jit_compile=jit)
        times = {"kdkeras": [], label: []}
        tokens = {"kdkeras": ours(), label: theirs()}  # warm-up: tracing
        for _ in range(rounds):
            for key, fn in (("kdkeras", ours), (label, theirs)):
                start = time.perf_counter()
                tokens[key] = fn()
                times[key].append(time.perf_counter() - start)
        rate = {k: tokens[k] / statistics.median(times[k]) for k in times}
        row[f"against_{label}"] = {"seconds": times, "tokens": tokens, "tokens_per_second": rate,
                                   "ratio": rate["kdkeras"] / rate[label]}
        print(f"{name}: kdkeras {rate['kdkeras']:,.0f} tokens/s, KerasHub generate (jit_compile={jit}) "
              f"{rate[label]:,.0f} tokens/s -> {rate['kdkeras'] / rate[label]:.2f}x", flush=True)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", help="a KerasHub causal LM preset to measure as well")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt-chars", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--top-k", type=int, default=0, help="0: random sampling over the whole vocabulary")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    from kdkeras import provenance
    from kdkeras.atomic import write_text
    from kdkeras.text import causal_lm

    models = []
    if args.teacher:
        models.append((f"preset {args.teacher}", lambda: causal_lm.load_causal_lm(args.teacher)))
    models.append(("GPT-2 6 x 128, byte vocabulary", lambda: gpt2(258, 6, 128, 256)))
    models.append(("GPT-2 6 x 128, GPT-2 vocabulary", lambda: gpt2(50257, 6, 128, 256)))
    rows = [measure(make(), name, args.batch, args.prompt_chars, args.new_tokens, args.rounds, args.top_k)
            for name, make in models]
    record = {"what": "generated tokens a second, kdkeras generate vs KerasHub CausalLM.generate, same process, "
                      "alternating rounds, medians", "rows": rows,
              "provenance": provenance.provenance(["scripts/benchmark_generate.py", *(argv or sys.argv[1:])])}
    write_text(args.json, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
