// Task weighting strategies: the rules that set α in Σ_i α_i f_i(θ) at every step of the θ-update
// loop (train.hpp). One header per concern:
//   weighting_config.hpp    the kinds, their settings and state sizes;
//   weighting_loss.hpp      loss-based (DWA, Uncertainty, RLW, FAMO) and evaluation-driven (EvalDriven);
//   weighting_gradient.hpp  gradient-based (GradNorm, MGDA, PCGrad, CAGrad, IMTL-G, Nash-MTL,
//                           Aligned-MTL, GradVac), on the Gram matrix;
//   linalg.hpp              the small dense solvers those use.
// Strategies that learn parameters of their own step them with the optimizers' Adam.
#pragma once

#include "metacore/weighting_config.hpp"
#include "metacore/weighting_gradient.hpp"
#include "metacore/weighting_loss.hpp"
