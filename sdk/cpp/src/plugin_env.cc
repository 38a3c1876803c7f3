#include "plugin_env.h"

#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <grp.h>
#include <set>
#include <unistd.h>

namespace tributary::sdk::internal {
namespace {

std::string errnoText(int err) {
  char buf[256];
  // GNU strerror_r returns the message pointer (which may or may not be buf).
  return std::string(strerror_r(err, buf, sizeof(buf)));
}

bool parseInt(std::string_view text, long& out) {
  if (text.empty()) {
    return false;
  }
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end;
}

}  // namespace

int negotiateVersion(const std::vector<int>& ours, std::string_view host_list,
                     std::vector<std::string>* invalid) {
  if (ours.empty()) {
    return 1;
  }
  std::set<long> host;
  while (!host_list.empty()) {
    const size_t comma = host_list.find(',');
    const std::string_view item = host_list.substr(0, comma);
    long v = 0;
    if (parseInt(item, v)) {
      host.insert(v);
    } else if (invalid != nullptr) {
      invalid->emplace_back(item);
    }
    if (comma == std::string_view::npos) {
      break;
    }
    host_list.remove_prefix(comma + 1);
  }
  std::vector<int> sorted = ours;
  std::sort(sorted.rbegin(), sorted.rend());
  for (const int v : sorted) {
    if (host.count(v) > 0) {
      return v;
    }
  }
  return sorted.back();
}

std::string socketDir() {
  for (const char* name : {"PLUGIN_UNIX_SOCKET_DIR", "TMPDIR"}) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') {
      return v;
    }
  }
  return "/tmp";
}

absl::StatusOr<std::string> reserveSocketPath(const std::string& dir) {
  std::string tmpl = dir;
  if (tmpl.empty() || tmpl.back() != '/') {
    tmpl.push_back('/');
  }
  tmpl += "pluginXXXXXX";
  if (tmpl.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return absl::InvalidArgumentError("socket directory path too long for a Unix socket: " + dir);
  }
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) {
    return absl::UnavailableError("creating a socket name in " + dir + ": " + errnoText(errno));
  }
  ::close(fd);
  ::unlink(tmpl.c_str());
  return tmpl;
}

absl::StatusOr<gid_t> resolveGroup(std::string_view group_spec) {
  long numeric = 0;
  if (parseInt(group_spec, numeric)) {
    if (numeric < 0) {
      return absl::InvalidArgumentError("negative group id " + std::string(group_spec));
    }
    return static_cast<gid_t>(numeric);
  }
  const std::string name(group_spec);
  std::vector<char> buf(16384);
  struct group entry {};
  struct group* found = nullptr;
  int rc = 0;
  while ((rc = ::getgrnam_r(name.c_str(), &entry, buf.data(), buf.size(), &found)) == ERANGE) {
    buf.resize(buf.size() * 2);
  }
  if (rc != 0) {
    return absl::UnavailableError("looking up group " + name + ": " + errnoText(rc));
  }
  if (found == nullptr) {
    return absl::NotFoundError("no such group: " + name);
  }
  return found->gr_gid;
}

absl::Status makeGroupWritable(const std::string& path, std::string_view group_spec) {
  auto gid = resolveGroup(group_spec);
  if (!gid.ok()) {
    return gid.status();
  }
  if (::chown(path.c_str(), static_cast<uid_t>(-1), *gid) != 0) {
    return absl::PermissionDeniedError("chgrp " + std::string(group_spec) + " " + path + ": " +
                                       errnoText(errno));
  }
  if (::chmod(path.c_str(), 0660) != 0) {
    return absl::PermissionDeniedError("chmod 0660 " + path + ": " + errnoText(errno));
  }
  return absl::OkStatus();
}

std::string formatHandshake(int app_version, std::string_view network, std::string_view address,
                            std::string_view cert_b64) {
  std::string line = "1|" + std::to_string(app_version) + "|";
  line.append(network).append("|").append(address).append("|grpc|").append(cert_b64);
  line.push_back('\n');
  return line;
}

absl::Status writeAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return absl::UnavailableError("write: " + errnoText(errno));
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

}  // namespace tributary::sdk::internal
