"""The :class:`Distiller`, a ``keras.Model`` that trains a student from a frozen teacher, and its batch format.

A batch that carries precomputed teacher logits is part of the Distiller's
contract (any data source may produce it, :func:`kdkeras.cache_teacher_logits`
does)::

    ({"inputs": x, "teacher_logits": t}, y[, sample_weight])

:func:`cached_batch` builds that form and :func:`split_cached_inputs` takes it apart.
"""

import dataclasses
import inspect
import logging

import keras
import tensorflow as tf

from kdkeras import checks
from kdkeras import distribute as _distribute
from kdkeras import language
from kdkeras import losses as losses_module
from kdkeras import sampling, token_chunks
from kdkeras.losses import TopKTeacher
from kdkeras.soft_targets import SoftTargetVariables
from kdkeras.teachers import as_teacher
from kdkeras.terms import (DistillationBatch, SoftTargetLoss, StudentLoss, capture_outputs, is_token_level,
                           reduce_terms)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_TEMPERATURE",
    "Distiller",
    "INPUTS_KEY",
    "TEACHER_LOGITS_KEY",
    "TEACHER_TOP_K_KEY",
    "cached_batch",
    "split_cached_inputs",
    "top_k_batch",
]

#: ``compile``'s default weight of the hard-label loss (the keras.io example's value).
DEFAULT_ALPHA = 0.1
#: ``compile``'s default temperature (the keras.io example's value).
DEFAULT_TEMPERATURE = 3.0

#: Key of the model inputs in a batch that carries cached teacher logits.
INPUTS_KEY = "inputs"
#: Key of the cached teacher logits in such a batch.
TEACHER_LOGITS_KEY = "teacher_logits"


#: Key of a top-k teacher cache in such a batch (instead of the full logits).
TEACHER_TOP_K_KEY = "teacher_top_k"
_TOP_K_FIELDS = ("log_probs", "indices", "tail_log_mass", "temperature")


def cached_batch(inputs, teacher_logits):
    """The inputs part of a batch that carries the teacher's logits: ``{"inputs": x, "teacher_logits": t}``."""
    return {INPUTS_KEY: inputs, TEACHER_LOGITS_KEY: teacher_logits}


def top_k_batch(inputs, log_probs, indices, tail_log_mass, temperature):
    """The inputs part of a batch that carries a top-k teacher cache (see :class:`kdkeras.losses.TopKTeacher`).

    ``{"inputs": x, "teacher_top_k": {"log_probs": [b, s, k], "indices": [b, s, k],
    "tail_log_mass": [b, s], "temperature": [b]}}``; ``temperature`` is the one
    the log-probabilities were made at (the Distiller refuses to train at another).
    """
    fields = {"log_probs": log_probs, "indices": indices, "tail_log_mass": tail_log_mass, "temperature": temperature}
    return {INPUTS_KEY: inputs, TEACHER_TOP_K_KEY: fields}


def split_cached_inputs(x):
    """Splits a batch's inputs into ``(model inputs, cached teacher logits or None)``.

    Inputs made by :func:`cached_batch` come apart into the logits; inputs made
    by :func:`top_k_batch` into a ``(TopKTeacher, temperature)`` pair; any
    other input is returned as is.
    """
    if isinstance(x, dict) and set(x) == {INPUTS_KEY, TEACHER_LOGITS_KEY}:
        return x[INPUTS_KEY], x[TEACHER_LOGITS_KEY]
    if isinstance(x, dict) and set(x) == {INPUTS_KEY, TEACHER_TOP_K_KEY}:
        fields = x[TEACHER_TOP_K_KEY]
        if not isinstance(fields, dict) or set(fields) != set(_TOP_K_FIELDS):
            raise ValueError(f"A top-k teacher cache needs the fields {list(_TOP_K_FIELDS)}; received "
                             f"{sorted(fields) if isinstance(fields, dict) else type(fields).__name__}.")
        teacher = TopKTeacher(fields["log_probs"], fields["indices"], fields["tail_log_mass"])
        return x[INPUTS_KEY], (teacher, fields["temperature"])
    return x, None


@keras.saving.register_keras_serializable(package="kdkeras")
class Distiller(SoftTargetVariables, keras.Model):
    """Trains a student network to match a frozen teacher (knowledge distillation).

    The loss of one batch (Hinton, Vinyals & Dean, 2015) is::

        alpha * student_loss(y, z_s) + (1 - alpha) * distillation_loss(z_t, z_s, T)

    where ``z_t`` and ``z_s`` are the teacher's and the student's logits. With
    the default ``distillation_loss_fn="kl"`` the distillation term is
    ``T**2 * KL(softmax(z_t / T) || softmax(z_s / T))``. ``alpha`` is the weight
    of the hard-label loss, as in the keras.io "Knowledge Distillation"
    example (some texts call ``1 - alpha`` "alpha").

    The teacher is frozen and always called with ``training=False``.
    ``call``/``predict`` return the student's plain logits (``T = 1``).
    ``fit`` and ``evaluate`` report ``loss``, ``student_loss``,
    ``distillation_loss``, ``agreement`` (teacher-student top-1 agreement)
    and the compiled metrics on the student's predictions.

    Batches may be ``(x, y)``, ``(x, y, sample_weight)``, or carry cached
    teacher logits as ``({"inputs": x, "teacher_logits": t}, y[, sample_weight])``
    (see :func:`kdkeras.cache_teacher_logits`), in which case the teacher is
    not run. Under ``tf.distribute`` one step updates the weights exactly as
    one device does on the same global batch.

    Language models (logits ``[batch, steps, vocab]``) are distilled per token:
    every term is averaged over the real tokens of the global batch, weighted
    by a ``[batch, steps]`` ``sample_weight`` or, without one, by the
    ``padding_mask`` of KerasHub-style dict inputs (see :mod:`kdkeras.language`);
    ``compile(on_policy=kdkeras.OnPolicy(...))`` adds on-policy distillation.

    Extra loss terms (the one extension point, see :mod:`kdkeras.terms`) are
    added with ``loss_terms=``; each is weighted, reported under its name, and
    may ask for intermediate layer outputs of either model.

    Args:
        student: The ``keras.Model`` to train; it must output logits.
        teacher: The trained ``keras.Model``; logits of the same shape. A list
            of trained models is distilled as their ensemble (the mean of their
            logits, :class:`kdkeras.TeacherEnsemble`).
        teacher_outputs: ``"logits"`` (default) or ``"probabilities"`` for a
            teacher that ends in a softmax: it is then wrapped in
            :class:`kdkeras.ProbabilityTeacher`, whose log-probabilities give
            exactly the same soft targets as its logits would.
        loss_terms: Extra :class:`kdkeras.terms.LossTerm` instances added to the
            loss (not saved in the config: a subclass that builds its terms in
            ``__init__``, like :class:`kdkeras.FeatureDistiller`, saves them).
        vocabulary_size: For language models whose output sizes differ only
            by padding rows (an embedding padded to a multiple of 64, say):
            compare the first ``vocabulary_size`` logits of both. Without it,
            outputs of different sizes are refused. Where both tokenizers
            are known (KerasHub preprocessors), they must give the same ids
            on a probe text and no id at or beyond ``vocabulary_size``
            (:func:`kdkeras.language.check_same_tokenizer`).
        preprocessor: Turns raw strings into token batches when ``fit`` or
            ``evaluate`` receive text (a KerasHub preprocessor); default: the
            student's ``preprocessor``, else the teacher's.
        **kwargs: Passed on to ``keras.Model`` (for example ``name``).

    Example:

    ```python
    teacher = kdkeras.build_teacher()
    # ... teacher.compile(...); teacher.fit(...)
    distiller = kdkeras.Distiller(student=kdkeras.build_student(), teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn="kl",
        alpha=0.1,
        temperature=3.0,
    )
    distiller.fit(train_ds, epochs=3, validation_data=test_ds)
    distiller.student.save("student.keras")
    ```
    """


    def __init__(self, student, teacher, loss_terms=(), teacher_outputs="logits", vocabulary_size=None,
                 preprocessor=None, **kwargs):
        super().__init__(**kwargs)
        teacher = as_teacher(teacher, teacher_outputs)
        checks.check_model(student, "student")
        checks.check_model(teacher, "teacher")
        self.vocabulary_size = checks.check_same_outputs(teacher, student, vocabulary_size)
        language.check_same_tokenizer(language.tokenizer_of(teacher),
                                      language.tokenizer_of(preprocessor or student), self.vocabulary_size)
        self.preprocessor = preprocessor
        self._on_policy = None
        self._heads = {}
        self._chunk_setting = token_chunks.AUTO
        self._path_logged = False
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self._create_soft_target_variables(DEFAULT_TEMPERATURE, DEFAULT_ALPHA)
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.agreement_tracker = keras.metrics.Mean(name="agreement")
        self.student_loss_fn = None
        self.distillation_loss_fn = None
        self._distill_compile_args = None
        self.loss_terms = []
        self.term_trackers = []
        self._terms = []
        for term in loss_terms:
            self.add_loss_term(term)
        if student.built:
            self.built = True

    def add_loss_term(self, term):
        """Adds a :class:`kdkeras.terms.LossTerm` to the loss (before ``compile``)."""
        names = {"loss", "student_loss", "distillation_loss", "agreement"} | {t.name for t in self.loss_terms}
        if term.name in names:
            raise ValueError(f"A loss term named {term.name!r} exists already; names in use: {sorted(names)}.")
        self.loss_terms.append(term)
        self.term_trackers.append(keras.metrics.Mean(name=term.name))

    # ------------------------------------------------------------------ #
    # The training and test steps
    # ------------------------------------------------------------------ #
    def call(self, inputs, training=None):
        inputs, _ = split_cached_inputs(inputs)
        return self.student(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight, cached_logits = self._unpack(data)
        hard_label_weight = 1.0
        if self._on_policy is not None:
            # On-policy: with probability lambda the student continues the prompts by sampling
            x, y, sample_weight, hard_label_weight = self._on_policy_batch(x, y, sample_weight, cached_logits)
        # Forward pass of teacher (skipped when the batch carries its cached logits)
        teacher_logits, teacher_features = self._teacher_forward(x, cached_logits)
        with tf.GradientTape() as tape:
            # Forward pass of student
            student_logits, student_features = self._forward(self.student, "student_layers", x, training=True)
            sample_weight = self._weights(x, sample_weight, student_logits)
            # Compute losses: alpha * hard-label loss + (1 - alpha) * T² KL (+ any extra terms)
            batch = DistillationBatch(y, sample_weight, teacher_logits, student_logits, teacher_features,
                                      student_features, hard_label_weight, language.default_token_weights(x, None))
            losses = self.term_values(batch, training=True)
            scaled_loss = self.optimizer.scale_loss(losses.gradient_loss)
        # Compute gradients
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        # Update the metrics (the loss turns NaN when the input batch held NaN or Inf), before the
        # update: a fused head forms the metrics' logits from its weights as they were in the step
        self._update_trackers(losses, batch, finite_inputs=_all_finite(x))
        logs = self._step_logs(x, y, student_logits, sample_weight)
        # Update weights
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return logs

    def test_step(self, data):
        x, y, sample_weight, cached_logits = self._unpack(data)
        teacher_logits, teacher_features = self._teacher_forward(x, cached_logits)
        student_logits, student_features = self._forward(self.student, "student_layers", x, training=False)
        sample_weight = self._weights(x, sample_weight, student_logits)
        batch = DistillationBatch(y, sample_weight, teacher_logits, student_logits, teacher_features, student_features,
                                  token_weights=language.default_token_weights(x, None))
        self._update_trackers(self.term_values(batch, training=False), batch)
        return self._step_logs(x, y, student_logits, sample_weight)

    def term_values(self, batch, training=True):
        """Every term of the loss on one batch; returns :class:`kdkeras.terms.TermValues`.

        (Not Keras' ``compute_loss``: this returns every weighted term, their
        total and the values the metrics need, for one local batch.)
        Differentiate ``gradient_loss``: for language models the token-level
        terms' gradient is formed in the forward pass over chunks of tokens
        (``training=True``, at the optimizer's loss scale), and ``total`` and
        ``means`` carry none.

        The terms are the hard-label loss (weight ``alpha``), the distillation
        loss (weight ``1 - alpha``) and any extra ``loss_terms``, in that order.
        """
        if self.distillation_loss_fn is None:
            raise RuntimeError("Call Distiller.compile() before fit(), evaluate() or test_step().")
        student_logits, teacher_logits = batch.student_logits, batch.teacher_logits
        vocabulary = self.vocabulary_size or student_logits.shape[-1]
        chunk = token_chunks.chunk_size_for(self._chunk_setting, vocabulary,
                                             _head_width(student_logits, teacher_logits)) \
            if is_token_level(student_logits) else None
        if chunk is not None or isinstance(student_logits, token_chunks.HeadLogits):
            self._log_token_path(chunk)
            if not isinstance(teacher_logits, TopKTeacher):
                checks.check_logit_shapes(_vocabulary_shape(teacher_logits, vocabulary),
                                          _vocabulary_shape(student_logits, vocabulary))
            labels = checks.checked_labels(batch.labels, vocabulary, self.jit_compile)
            scale = self.optimizer.scale_loss(tf.constant(1.0)) if training and self.optimizer is not None else None
            return token_chunks.reduce_token_terms(self._terms, batch._replace(labels=labels), chunk,
                                                   self.vocabulary_size, loss_scale=scale, gradient=training)
        student_logits = self._vocabulary(tf.cast(student_logits, tf.float32))
        if not isinstance(teacher_logits, TopKTeacher):
            teacher_logits = self._vocabulary(teacher_logits)
            checks.check_logit_shapes(teacher_logits, student_logits)
        labels = checks.checked_labels(batch.labels, tf.shape(student_logits)[-1], self.jit_compile)
        return reduce_terms(self._terms, batch._replace(labels=labels, student_logits=student_logits,
                                                        teacher_logits=teacher_logits))

    def _log_token_path(self, chunk):
        """Says once which path computes the token-level losses."""
        if self._path_logged:
            return
        self._path_logged = True
        fused = [role for role in ("student", "teacher") if f"{role}_layers" in self._heads]
        logger.info("kdkeras: token-level losses over chunks of %s tokens; %s.",
                    chunk if chunk is not None else "all the",
                    f"fused LM head for the {' and '.join(fused)} (no full logits)" if fused
                    else "full logits of both models (no fused LM head)")

    def _vocabulary(self, logits):
        """The first ``vocabulary_size`` logits (all of them when it is not set)."""
        return logits if self.vocabulary_size is None else logits[..., :self.vocabulary_size]

    def _weights(self, x, sample_weight, student_logits):
        """The batch's weights; for token-level logits without ``sample_weight``, the inputs' padding mask."""
        if sample_weight is None and is_token_level(student_logits):
            return language.default_token_weights(x, None)
        return sample_weight

    def _on_policy_batch(self, x, y, sample_weight, cached_logits):
        """``(x, y, weights, hard-label weight)``: the batch, or with probability lambda the student's samples."""
        if cached_logits is not None:
            raise ValueError("On-policy distillation needs the teacher online to score the student's samples; "
                             "train on the plain token dataset, not on cached teacher logits.")
        policy, step = self._on_policy, self.optimizer.iterations
        weights = language.weights_or_ones(x, y, sample_weight)

        def sampled():
            new_x, new_y, new_w = sampling.sample_continuations(self.student, x, step, policy, self.vocabulary_size)
            return new_x, tf.cast(new_y, y.dtype), new_w, tf.constant(0.0)

        def as_given():
            return x, y, weights, tf.constant(1.0)

        if policy.fraction >= 1.0 and policy.start_step == 0:
            return sampled()
        return tf.cond(sampling.on_policy_coin(step, policy), sampled, as_given)

    # ------------------------------------------------------------------ #
    # Forward passes, metrics and logs
    # ------------------------------------------------------------------ #
    def _unpack(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, teacher_logits = split_cached_inputs(x)
        return x, y, sample_weight, teacher_logits

    def _teacher_forward(self, x, cached_logits):
        """The teacher's logits (float32, no gradient) and the features the terms asked for.

        A top-k cache gives a :class:`kdkeras.losses.TopKTeacher` instead of logits.
        """
        if cached_logits is None:
            logits, features = self._forward(self.teacher, "teacher_layers", x, training=False)
        elif any(term.teacher_layers for term in self.loss_terms):
            raise ValueError(
                "A loss term needs the teacher's intermediate features, which cached teacher logits do not "
                "carry: train on the plain dataset (the teacher then runs online)."
            )
        elif isinstance(cached_logits, tuple):
            teacher, cache_temperature = cached_logits
            teacher = checks.checked_cache_temperature(teacher, cache_temperature, self.temperature_variable,
                                                       self.jit_compile)
            return tf.nest.map_structure(tf.stop_gradient, teacher), {}
        else:
            logits, features = cached_logits, {}
        features = tf.nest.map_structure(lambda v: tf.stop_gradient(tf.cast(v, tf.float32)), features)
        if isinstance(logits, token_chunks.HeadLogits):
            return logits._replace(hidden=tf.stop_gradient(logits.hidden)), features
        return tf.stop_gradient(tf.cast(logits, tf.float32)), features

    def _forward(self, model, which, x, training):
        """Runs ``model``, capturing the outputs of the layers the terms listed in ``which``.

        With a fused LM head (:mod:`kdkeras.token_chunks`) the "logits" are a
        :class:`kdkeras.token_chunks.HeadLogits`: the hidden states and the head.
        """
        head = self._heads.get(which)

        def run():
            if head is None:
                return model(x, training=training)
            return token_chunks.HeadLogits(head.body(x, training=training), head.head, head.vocabulary)

        layers = {(term.name, key): layer for term in self.loss_terms
                  for key, layer in getattr(term, which).items()}
        if not layers:
            return run(), {}
        with capture_outputs(layers) as captured:
            logits = run()
        features = {}
        for (name, key), value in captured.items():
            features.setdefault(name, {})[key] = value
        return logits, features

    def _update_trackers(self, losses, batch, finite_inputs=None):
        total = losses.total
        if finite_inputs is not None:
            # A NaN pixel can vanish in the forward pass (ReLU and max-pooling drop it) and still
            # turn the weights into NaN through the gradient: report the loss as NaN, so that
            # StopOnNonFinite stops here. (Checking the inputs is two ops a step; checking every
            # gradient cost about 7 % of a small student's step on CPU.)
            total = tf.where(finite_inputs, total, tf.constant(float("nan"), total.dtype))
        self._loss_tracker.update_state(total, sample_weight=losses.local_n)
        for tracker, mean in zip(self._term_metric_list, losses.means):
            tracker.update_state(mean, sample_weight=losses.local_n)
        if losses.student_top1 is not None:  # computed over chunks of tokens
            agree = tf.cast(tf.equal(losses.student_top1, losses.teacher_top1), tf.float32)
        else:
            agree = tf.cast(tf.equal(tf.argmax(batch.student_logits, axis=-1, output_type=tf.int32),
                                     _teacher_top1(batch.teacher_logits)), tf.float32)
        self.agreement_tracker.update_state(agree, sample_weight=losses.example_weights)

    def _step_logs(self, x, y, student_logits, sample_weight):
        # Scalars cannot be reduced across workers by Keras 3.15 (see kdkeras.distribute).
        if isinstance(student_logits, token_chunks.HeadLogits):  # fused head: no full logits, metrics per chunk
            if self._compile_metrics is not None:
                vocabulary = self.vocabulary_size or student_logits.vocabulary
                token_chunks.update_metrics_by_chunks(
                    self._compile_metrics, y, student_logits, sample_weight,
                    token_chunks.chunk_size_for(self._chunk_setting, vocabulary, _head_width(student_logits)),
                    self.vocabulary_size)
            return _distribute.reducible_logs(self.get_metrics_result())
        logits = self._vocabulary(student_logits)
        return _distribute.reducible_logs(self.compute_metrics(x, y, logits, sample_weight))

    @property
    def _term_metric_list(self):
        return [self.student_loss_tracker, self.distillation_loss_tracker, *self.term_trackers]

    @property
    def metrics(self):
        # The loss first, then each term's mean, agreement and the compiled metrics (Keras'
        # order), and never the teacher's or student's own compiled metrics.
        metrics = [self._loss_tracker] if self.compiled else []
        metrics += [self.student_loss_tracker, self.distillation_loss_tracker, self.agreement_tracker,
                    *self.term_trackers]
        if self.compiled and self._compile_metrics is not None:
            metrics.append(self._compile_metrics)
        return metrics

    # ------------------------------------------------------------------ #
    # compile
    # ------------------------------------------------------------------ #
    def compile(
        self,
        optimizer="adam",
        metrics=None,
        student_loss_fn=None,
        distillation_loss_fn="kl",
        alpha=DEFAULT_ALPHA,
        temperature=DEFAULT_TEMPERATURE,
        on_policy=None,
        token_chunking=token_chunks.TokenChunking(),
        **kwargs,
    ):
        """Configures the distiller for training.

        Args:
            optimizer: Optimizer for the student (name or instance).
            metrics: Metrics computed on the student's logits, as in
                ``keras.Model.compile``. ``weighted_metrics`` is accepted too.
            student_loss_fn: Hard-label loss on the student's logits; default
                ``SparseCategoricalCrossentropy(from_logits=True)``. A string
                naming a Keras cross-entropy is resolved with ``from_logits=True``.
            distillation_loss_fn: ``"kl"`` (default), ``"reverse_kl"``,
                ``"soft_ce"``, ``"mse"`` or another registered name (see
                :func:`kdkeras.losses.available`), a ``keras.losses.Loss``
                instance such as ``KLDivergence()`` (applied keras.io-style to
                the softened distributions, times ``T**2``), or a function
                ``f(teacher_logits, student_logits, temperature)``.
            alpha: Weight of the hard-label loss, in ``[0, 1]``.
            temperature: Softmax temperature ``T > 0`` of the soft targets.
            on_policy: Language models: a :class:`kdkeras.OnPolicy` (the
                fraction of batches the student continues by sampling, the
                tokens it generates, its temperature, seed, end token and
                warm start), or ``None`` (default: ordinary off-policy
                training). See :func:`kdkeras.sampling.sample_continuations`.
            token_chunking: Language models: a :class:`kdkeras.TokenChunking`
                (default: chunks of ``"auto"`` tokens and the fused head), so
                that a step never holds several ``[tokens, V]`` float32 copies
                (:mod:`kdkeras.token_chunks`); ``None``: the plain computation on
                full logits. One log line says which path ran. Values and
                gradients are the same either way.
            **kwargs: Other ``keras.Model.compile`` arguments (``jit_compile``,
                ``steps_per_execution``, ``run_eagerly``, ``weighted_metrics``,
                ``auto_scale_loss``). ``loss`` is not accepted: use
                ``student_loss_fn`` and ``distillation_loss_fn``.
        """
        if "loss" in kwargs:
            raise TypeError(
                "Distiller.compile() does not take `loss`; received "
                f"loss={kwargs['loss']!r}. Pass student_loss_fn= (hard labels) and "
                "distillation_loss_fn= (teacher soft targets) instead."
            )
        self.student_loss_fn, self.distillation_loss_fn, alpha, temperature = self._compile_soft_targets(
            student_loss_fn, distillation_loss_fn, alpha, temperature)
        chunking = token_chunks.TokenChunking.of(token_chunking)
        self._chunk_setting = chunking.size
        self._heads = {}
        if chunking.fused_head:
            for which, model in (("student_layers", self.student), ("teacher_layers", self.teacher)):
                head = token_chunks.head_of(model)
                if head is not None:
                    self._heads[which] = head
        self._path_logged = False
        if isinstance(on_policy, dict):
            on_policy = sampling.OnPolicy(**on_policy)
        if on_policy is not None and not isinstance(on_policy, sampling.OnPolicy):
            raise TypeError(f"on_policy must be a kdkeras.OnPolicy or None; received {on_policy!r}.")
        # "auto" token ids resolved from the tokenizer now; an off fraction samples nothing
        self._on_policy = on_policy.resolved(self._tokenizer()) if on_policy and on_policy.fraction else None
        self._terms = [
            StudentLoss(self.student_loss_fn, weight=self._hard_weight),
            SoftTargetLoss(self.distillation_loss_fn, lambda: self.temperature_variable, weight=self._soft_weight),
            *self.loss_terms,
        ]
        self._distill_compile_args = {
            "student_loss_fn": self.student_loss_fn, "distillation_loss_fn": distillation_loss_fn, "alpha": alpha,
            "temperature": temperature, "on_policy": None if on_policy is None else dataclasses.asdict(on_policy),
            "token_chunking": dataclasses.asdict(chunking),
        }
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self._assign_soft_targets(alpha, temperature)

    def _tokenizer(self):
        """The tokenizer of the preprocessor (the Distiller's, else the student's or the teacher's), or ``None``."""
        preprocessor = self.preprocessor or language.find_preprocessor(self.student, self.teacher)
        return getattr(preprocessor, "tokenizer", None)

    # ------------------------------------------------------------------ #
    # Serialization
    # ------------------------------------------------------------------ #
    def get_config(self):
        def serialize(model):
            # The sub-models' own compile state (e.g. the teacher's optimizer)
            # plays no part in distillation and is not saved with the distiller.
            config = keras.saving.serialize_keras_object(model)
            config.pop("compile_config", None)
            return config

        return {
            "name": self.name,
            "trainable": self.trainable,
            "student": serialize(self.student),
            "teacher": serialize(self.teacher),
            "vocabulary_size": self.vocabulary_size,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"), custom_objects=custom_objects)
        teacher = keras.saving.deserialize_keras_object(config.pop("teacher"), custom_objects=custom_objects)
        return cls(student=student, teacher=teacher, **config)

    def build(self, input_shape=None):
        if not self.student.built and input_shape is not None:
            self.student.build(input_shape)
        self.built = True

    def get_compile_config(self):
        config = super().get_compile_config()
        if not self._distill_compile_args:
            return config
        args = dict(self._distill_compile_args)
        dist = args["distillation_loss_fn"]
        if not isinstance(dist, (str, keras.losses.Loss)):
            name = losses_module.name_of(dist)
            if name is None:
                logger.warning(
                    "The distillation loss %r is not registered by name; it is saved as a function and may "
                    "not load. Register it with kdkeras.losses.register().", dist)
            else:
                dist = name
        config.pop("loss", None)
        config.pop("loss_weights", None)
        config["student_loss_fn"] = keras.saving.serialize_keras_object(args["student_loss_fn"])
        config["distillation_loss_fn"] = dist if isinstance(dist, str) else keras.saving.serialize_keras_object(dist)
        for key in ("alpha", "temperature", "on_policy", "token_chunking"):
            config[key] = args[key]
        return config

    def compile_from_config(self, config):
        config = dict(config)
        dist = config.pop("distillation_loss_fn", "kl")
        plain = {key: config.pop(key) for key in ("on_policy", "token_chunking") if key in config}
        if not isinstance(dist, str):
            dist = keras.saving.deserialize_keras_object(dist)
        config = keras.saving.deserialize_keras_object(config)
        self.compile(distillation_loss_fn=dist, **config, **plain)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ #
    # Input validation around fit / evaluate (kdkeras.checks)
    # ------------------------------------------------------------------ #
    def _num_classes(self):
        return checks.output_dim(self.student) or checks.output_dim(self.teacher)

    def _check_data(self, x, y, role):
        checks.check_data(self.student, self._num_classes(), x, y, role, split_cached_inputs)

    def _check_validation(self, validation_data):
        if isinstance(validation_data, tf.data.Dataset):
            self._check_data(validation_data, None, "validation")
        elif isinstance(validation_data, (tuple, list)) and len(validation_data) >= 2:
            self._check_data(validation_data[0], validation_data[1], "validation")

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 reduces a distributed data batch across workers just to learn its
        # shapes, which fails under MultiWorkerMirroredStrategy (see kdkeras.distribute).
        return _distribute.symbolic_build(self, super()._maybe_symbolic_build, iterator, data_batch)

    def _text_to_tokens(self, x, y, arguments):
        """Raw strings through the preprocessor (the Distiller's, else the student's or teacher's)."""
        preprocessor = self.preprocessor or language.find_preprocessor(self.student, self.teacher)
        x = language.preprocess_strings(preprocessor, x, y, arguments.pop("sample_weight", None),
                                        arguments.pop("batch_size", None))
        return x, None

    def _validation_tokens(self, validation_data):
        if language.is_string_data(validation_data):
            return self._text_to_tokens(validation_data, None, {})[0]
        if isinstance(validation_data, (tuple, list)) and validation_data and \
                language.is_string_data(validation_data[0]):
            x, y, w = (list(validation_data) + [None, None])[:3]
            return self._text_to_tokens(x, y, {"sample_weight": w})[0]
        return validation_data

    def fit(self, x=None, y=None, *args, **kwargs):
        """Trains the student; see ``keras.Model.fit``.

        Bad data raises ``ValueError`` before the first step. Raw strings (an
        array or a dataset of them) go through the preprocessor first (see the
        ``preprocessor`` argument). Pass
        ``callbacks=[kdkeras.callbacks.StopOnNonFinite()]`` to stop at the first
        NaN or infinite loss with an error naming the epoch and step (the main job
        does); it is not added by default because a per-step Python callback costs
        about 10 % of a small student's step on CPU.
        """
        arguments = _bind(keras.Model.fit, self, x, y, *args, **kwargs)
        x, y = arguments.pop("x"), arguments.pop("y")
        if language.is_string_data(x):
            x, y = self._text_to_tokens(x, y, arguments)
        if arguments.get("validation_data") is not None:
            arguments["validation_data"] = self._validation_tokens(arguments["validation_data"])
        self._check_data(x, y, "training")
        self._check_validation(arguments.get("validation_data"))
        if isinstance(x, tf.data.Dataset):
            # Keras 3.15 warns about its default shuffle=True for every dataset; a dataset shuffles itself.
            arguments.setdefault("shuffle", False)
        try:
            history = super().fit(x, y, **arguments)
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            checks.raise_friendly(e, "training")
        if arguments.get("epochs", 1) > arguments.get("initial_epoch", 0) and not history.history:
            raise ValueError(
                "The training data produced no batches (an empty dataset?): no "
                "training step ran. Check the source arrays and any filter()/take() upstream."
            )
        return history

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """Evaluates the student against the teacher; see ``keras.Model.evaluate`` (raw strings as in :meth:`fit`)."""
        arguments = _bind(keras.Model.evaluate, self, x, y, *args, **kwargs)
        x, y = arguments.pop("x"), arguments.pop("y")
        if language.is_string_data(x):
            x, y = self._text_to_tokens(x, y, arguments)
        self._check_data(x, y, "evaluation")
        try:
            return super().evaluate(x, y, **arguments)
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            checks.raise_friendly(e, "evaluation")


def _bind(method, model, *args, **kwargs):
    """The arguments of a call of ``method`` (``keras.Model.fit``/``evaluate``) by name, as given (no defaults).

    ``x`` and ``y`` are always present.
    """
    bound = inspect.signature(method).bind(model, *args, **kwargs).arguments
    bound.pop("self")
    extra = bound.pop("kwargs", {})
    bound.update(extra)
    bound.setdefault("x", None)
    bound.setdefault("y", None)
    return bound


def _vocabulary_shape(logits, vocabulary):
    """A static ``tf.TensorShape`` of ``logits`` with the last axis cut to the compared vocabulary."""
    shape = logits.shape
    last = shape[-1] if shape[-1] is None else min(shape[-1], vocabulary)
    return tf.TensorSpec(shape[:-1].concatenate([last]))


def _head_width(*logits):
    """The widest hidden width among fused heads' :class:`kdkeras.token_chunks.HeadLogits` (None: no fused head)."""
    widths = [int(z.hidden.shape[-1]) for z in logits
              if isinstance(z, token_chunks.HeadLogits) and z.hidden.shape[-1] is not None]
    return max(widths) if widths else None


def _teacher_top1(teacher_logits):
    """The teacher's most likely class per example or token (int32)."""
    if isinstance(teacher_logits, TopKTeacher):
        return tf.cast(teacher_logits.indices[..., 0], tf.int32)
    return tf.argmax(teacher_logits, axis=-1, output_type=tf.int32)


def _all_finite(x):
    """A scalar bool: every floating-point input tensor is free of NaN and Inf (``None`` if none is)."""
    flags = [tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(x)
             if isinstance(t, tf.Tensor) and t.dtype.is_floating]
    if not flags:
        return None
    return flags[0] if len(flags) == 1 else tf.reduce_all(tf.stack(flags))
