// Files the agent reads whole, and state files in its state dir: written atomically (temporary
// file, fsync, rename, fsync of the directory), and when found unreadable, set aside under a name
// no earlier one has (<path>.rejected-<unix time>[.n]) for a human to look at.
#pragma once

#include "apiwarden/common/result.h"

#include <string>
#include <utility>

namespace apiwarden {

// The whole file; the error keeps errno (ENOENT for a missing file).
Result<std::string> readFile(const std::string& path);

// parse(text) of the whole file; errors of either name the file.
template <typename Parse>
auto parseFile(const std::string& path, Parse parse) -> decltype(parse(std::string())) {
  auto text = readFile(path);
  if (!text) return std::unexpected(text.error());
  auto parsed = parse(*text);
  if (!parsed) return std::unexpected(std::move(parsed.error()).context(path));
  return parsed;
}

Result<void> writeFileAtomically(const std::string& path, const std::string& data);

// Renames path aside; returns the new name.
Result<std::string> setAside(const std::string& path);

}  // namespace apiwarden
