"""Warning category for iterative algorithms that stop before their tolerance."""

__all__ = ["ConvergenceWarning"]


class ConvergenceWarning(UserWarning):
    """Warning that an iterative algorithm stopped before meeting its tolerance.

    The message states the accuracy reached and the tolerance requested. The
    returned result is still the best the algorithm found, and its
    ``converged`` field records which parts met the tolerance.

    Turn it into an error with ``warnings.simplefilter("error",
    hessop.ConvergenceWarning)``, or silence it with ``"ignore"``.
    """
