"""metacore.reference: the core's numerics (objective, meta-gradients, optimizers, task weighting) written
plainly in NumPy, in float64.

The test oracle for the C++ core and the pure-Python baseline of every benchmark: clear, not fast.
"""

from .losses import row_loss_grads, row_loss_hvps
from .meta import (adapt, adapt_predict, anil_value_and_grad, maml_value_and_grad,
                   metasgd_value_and_grad, reptile_value_and_grad)
from .meta import mamlpp_value_and_grad, msl_weights
from .net import forward, loss_and_grad, loss_hvp, predict, row_losses, weighted_loss_and_grad
from .prototypes import protonet_adapt_predict, protonet_value_and_grad
from .ridge_head import (ridge_head_adapt_predict, ridge_head_logits, ridge_head_value_and_grad,
                         ridge_head_weights)
from .imaml import imaml_adapt, imaml_adapt_predict, imaml_value_and_grad
from .objective import (objective_grad, objective_hvp, objective_value, objective_value_and_grad,
                        objective_value_and_grad_vectorized, task_grads, task_losses)
from .optim import optimizer_init, optimizer_step, run_optimizer, schedule_factor
from . import weighting

__all__ = [
    "forward", "predict", "row_losses", "row_loss_grads", "row_loss_hvps",
    "loss_and_grad", "weighted_loss_and_grad", "loss_hvp",
    "objective_value", "objective_grad", "objective_value_and_grad",
    "objective_value_and_grad_vectorized", "objective_hvp", "task_losses", "task_grads",
    "maml_value_and_grad", "anil_value_and_grad", "metasgd_value_and_grad",
    "mamlpp_value_and_grad", "msl_weights",
    "reptile_value_and_grad", "adapt", "adapt_predict",
    "protonet_value_and_grad", "protonet_adapt_predict",
    "ridge_head_value_and_grad", "ridge_head_adapt_predict", "ridge_head_weights",
    "ridge_head_logits", "imaml_value_and_grad", "imaml_adapt", "imaml_adapt_predict",
    "schedule_factor", "optimizer_init", "optimizer_step", "run_optimizer",
]
