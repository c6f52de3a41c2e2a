#include "apiwarden/common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>

namespace apiwarden {
namespace {

std::mutex& registryMutex() {
  static std::mutex mutex;
  return mutex;
}

}  // namespace

bool setLogLevel(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") return false;
  spdlog::set_level(parsed);  // applies to registered loggers and becomes the default for new ones
  return true;
}

std::shared_ptr<spdlog::logger> logger(const std::string& component) {
  std::lock_guard lock(registryMutex());
  if (auto existing = spdlog::get(component)) return existing;
  auto created = spdlog::stderr_color_mt(component);
  created->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ [%n] %v", spdlog::pattern_time_type::utc);
  return created;
}

}  // namespace apiwarden
