"""What every distiller that learns from soft targets shares: temperature and alpha, and ``compile``'s checks.

:class:`SoftTargetVariables` keeps the temperature and alpha in
non-trainable variables (a schedule changes them between epochs without
retracing the step); :meth:`SoftTargetVariables._compile_soft_targets` checks
and resolves what :class:`kdkeras.Distiller` and
:class:`kdkeras.MutualLearning` both take in ``compile``.
"""

import keras

from kdkeras import checks
from kdkeras import losses as losses_module

__all__ = ["SoftTargetVariables"]


class SoftTargetVariables:
    """Temperature and alpha in non-trainable variables, for a ``keras.Model`` that distils.

    A schedule (:class:`kdkeras.callbacks.DistillationSchedule`) assigns them
    between epochs without retracing the step function, and they are saved and
    restored with the weights. Call :meth:`_create_soft_target_variables` in
    ``__init__``.
    """

    def _create_soft_target_variables(self, temperature, alpha):
        def variable(name, value):
            return self.add_weight(name=name, shape=(), initializer=keras.initializers.Constant(value),
                                   trainable=False, dtype="float32")

        self.temperature_variable = variable("temperature", temperature)
        self.alpha_variable = variable("alpha", alpha)

    @property
    def temperature(self):
        """The current temperature (a float). Assigning validates and updates the variable."""
        return float(keras.ops.convert_to_numpy(self.temperature_variable))

    @temperature.setter
    def temperature(self, value):
        self.temperature_variable.assign(checks.check_temperature(value))

    @property
    def alpha(self):
        """The current weight of the hard-label loss (a float in [0, 1])."""
        return float(keras.ops.convert_to_numpy(self.alpha_variable))

    @alpha.setter
    def alpha(self, value):
        self.alpha_variable.assign(checks.check_alpha(value))

    def _hard_weight(self):
        return self.alpha_variable

    def _soft_weight(self):
        return 1.0 - self.alpha_variable

    def _compile_soft_targets(self, student_loss_fn, distillation_loss_fn, alpha, temperature):
        """Checks and resolves ``compile``'s soft-target arguments.

        Returns ``(student_loss, distillation_loss, alpha, temperature)``, the
        last two as checked floats. Call it at the start of ``compile``, and
        :meth:`_assign_soft_targets` with them after ``keras.Model.compile``.
        """
        alpha, temperature = checks.check_alpha(alpha), checks.check_temperature(temperature)
        return (checks.resolve_student_loss(student_loss_fn), losses_module.get(distillation_loss_fn), alpha,
                temperature)

    def _assign_soft_targets(self, alpha, temperature):
        """Sets the variables to ``alpha`` and ``temperature`` as :meth:`_compile_soft_targets` returned them."""
        self.temperature_variable.assign(temperature)
        self.alpha_variable.assign(alpha)
