#include "tributary/testing/temp_dir.h"

#include "tributary/common/strings.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace tributary::harness {

namespace fs = std::filesystem;

TempDir::TempDir(std::string_view prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string templ =
      strings::cat(base != nullptr && *base != '\0' ? base : "/tmp", "/", prefix, "-XXXXXX");
  if (::mkdtemp(templ.data()) == nullptr) {
    throw std::runtime_error(strings::cat("cannot create a temporary directory ", templ, ": ",
                                          strings::errnoMessage(errno)));
  }
  // Traversable, not listable: connectors run by tests as root get another uid (the connector
  // sandbox) and must get through to their installed copies and trees in here.
  ::chmod(templ.c_str(), 0711);
  path_ = fs::canonical(templ);
}

TempDir::~TempDir() {
  std::error_code ec;
  // Directories a test made unreadable hide what is below them until they are fixed: two passes.
  for (int pass = 0; pass < 2; ++pass) {
    ::chmod(path_.c_str(), 0700);
    for (auto it = fs::recursive_directory_iterator(
             path_, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      std::error_code entry_ec;
      if (it->is_directory(entry_ec) && !it->is_symlink(entry_ec)) {
        ::chmod(it->path().c_str(), 0700);
      }
    }
  }
  fs::remove_all(path_, ec);
}

std::string TempDir::write(std::string_view name, std::string_view content) const {
  const fs::path file = path_ / std::string(name);
  fs::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  if (!out.flush()) {
    throw std::runtime_error(strings::cat("cannot write ", file.string()));
  }
  return file.string();
}

}  // namespace tributary::harness
