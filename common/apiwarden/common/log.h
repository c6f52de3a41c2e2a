// One named spdlog logger per component, all writing to stderr with the same pattern.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace apiwarden {

// Sets the level of every logger, present and future ("trace".."off"). Returns false if unknown.
bool setLogLevel(const std::string& level);

// The logger of a component ("loader", "capture", ...), created on first use.
std::shared_ptr<spdlog::logger> logger(const std::string& component);

}  // namespace apiwarden
