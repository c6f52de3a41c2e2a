#include "apiwarden/common/state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>

namespace apiwarden {
namespace {

Result<void> writeAll(int fd, const std::string& data) {
  for (size_t done = 0; done < data.size();) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(errno, "writing");
    done += static_cast<size_t>(n);
  }
  return {};
}

std::string directoryOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

Result<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errno, "reading " + path);
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return fail(EIO, "reading " + path);
  return text.str();
}

Result<void> writeFileAtomically(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail(errno, "creating " + tmp);
  auto written = writeAll(fd, data);
  if (written && ::fsync(fd) != 0) written = fail(errno, "fsync");
  ::close(fd);
  if (!written) {
    ::unlink(tmp.c_str());
    return std::unexpected(std::move(written.error()).context("writing " + tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return fail(err, "renaming " + tmp + " to " + path);
  }
  int dir = ::open(directoryOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return {};
}

Result<std::string> setAside(const std::string& path) {
  std::string aside = path + ".rejected-" + std::to_string(std::time(nullptr));
  struct stat st {};
  for (int i = 1; ::stat(aside.c_str(), &st) == 0; ++i) {
    aside = path + ".rejected-" + std::to_string(std::time(nullptr)) + "." + std::to_string(i);
  }
  if (std::rename(path.c_str(), aside.c_str()) != 0) return fail(errno, "setting aside " + path);
  return aside;
}

}  // namespace apiwarden
