// Names of the optimizer and schedule kinds, parsed in one place for every binding that takes them.
#pragma once

#include <string>

#include "arrays.hpp"
#include "metacore/optimizers.hpp"

namespace metacore::bindings {

inline OptimizerKind parse_optimizer_kind(const std::string& s) {
    return parse_choice<OptimizerKind>(
        "optimizer kind", s,
        {{"sgd", OptimizerKind::sgd}, {"adam", OptimizerKind::adam}, {"adamw", OptimizerKind::adamw}});
}

inline ScheduleKind parse_schedule_kind(const std::string& s) {
    return parse_choice<ScheduleKind>("schedule", s,
                                      {{"constant", ScheduleKind::constant},
                                       {"step", ScheduleKind::step},
                                       {"cosine", ScheduleKind::cosine},
                                       {"linear", ScheduleKind::linear}});
}

}  // namespace metacore::bindings
