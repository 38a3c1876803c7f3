#include "test_util.h"

#include "tributary/common/strings.h"
#include "tributary/testing/net.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>
#include <archive.h>
#include <archive_entry.h>
#include <array>
#include <chrono>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sstream>
#include <stdio.h>
#include <stdlib.h>
#include <thread>
#include <unistd.h>

namespace tributary::installer::testing {

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

ShellResult sh(const std::string& command, const fs::path& dir) {
  const std::string full =
      dir.empty() ? strings::cat("(", command, ") 2>&1")
                  : strings::cat("cd ", quote(dir.string()), " && (", command, ") 2>&1");
  ShellResult result;
  FILE* p = ::popen(full.c_str(), "r");
  if (p == nullptr) {
    result.output = "popen failed";
    return result;
  }
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) {
    result.output.append(buf.data(), n);
  }
  const int status = ::pclose(p);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string shOk(const std::string& command, const fs::path& dir) {
  ShellResult r = sh(command, dir);
  EXPECT_EQ(r.exit_code, 0) << command << "\n" << r.output;
  return r.output;
}

void writeFile(const fs::path& path, const std::string& content, fs::perms perms) {
  fs::create_directories(path.parent_path());
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
  }
  fs::permissions(path, perms);
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {
constexpr const char* kGitIdentity =
    "GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com GIT_COMMITTER_NAME=t "
    "GIT_COMMITTER_EMAIL=t@example.com";
}  // namespace

GitRepo::GitRepo(const fs::path& parent, const std::string& name, const std::string& default_branch)
    : bare_(parent / (name + ".git")), work_(parent / (name + "-work")) {
  shOk(strings::cat("git init -q --bare -b ", default_branch, " ", quote(bare_.string())));
  shOk(strings::cat("git init -q -b ", default_branch, " ", quote(work_.string())));
  shOk(strings::cat("git remote add origin ", quote(bare_.string())), work_);
}

std::string GitRepo::commit(const std::map<std::string, std::string>& files,
                            const std::string& message) {
  for (const auto& [path, content] : files) {
    writeFile(work_ / path, content,
              path.size() > 3 && path.substr(path.size() - 3) == ".sh"
                  ? static_cast<fs::perms>(0755)
                  : static_cast<fs::perms>(0644));
  }
  shOk(strings::cat("git add -A && ", kGitIdentity, " git commit -q -m ", quote(message)), work_);
  shOk("git push -q origin HEAD", work_);
  return head();
}

void GitRepo::checkoutNewBranch(const std::string& branch) {
  shOk(strings::cat("git checkout -q -b ", branch), work_);
}

void GitRepo::checkout(const std::string& branch) {
  shOk(strings::cat("git checkout -q ", branch), work_);
}

void GitRepo::tag(const std::string& name, bool annotated) {
  shOk(strings::cat(kGitIdentity, " git tag ", annotated ? "-a -m release " : "", name,
                    " && git push -q origin ", name),
       work_);
}

std::string GitRepo::head() const {
  std::string out = sh("git rev-parse HEAD", work_).output;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) {
    out.pop_back();
  }
  return out;
}

namespace {

pid_t spawn(const std::vector<std::string>& argv, int stdout_fd, bool quiet = false) {
  // Built before fork: the test process has other threads, the child may not allocate.
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) {
      ::_exit(127);
    }
    if (stdout_fd >= 0) {
      ::dup2(stdout_fd, 1);
    }
    const int devnull = ::open("/dev/null", O_RDWR);
    ::dup2(devnull, 0);
    if (quiet) {
      ::dup2(devnull, 2);  // git daemon logs every refused request
    }
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

void stopGroup(pid_t pid) {
  if (pid <= 0) {
    return;
  }
  ::kill(-pid, SIGTERM);
  for (int i = 0; i < 100; ++i) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      ::kill(-pid, SIGKILL);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(-pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

int freePort() { return harness::freeLoopbackPort().value_or(0); }

bool canConnect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

FixtureServer::FixtureServer(const fs::path& files_dir, const fs::path& git_root,
                             const std::string& token) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) {
    return;
  }
  pid_ = spawn({"python3", TRIBUTARY_INSTALLER_FIXTURE_SERVER, "--files", files_dir.string(),
                "--git-root", git_root.string(), "--token", token},
               pipefd[1]);
  ::close(pipefd[1]);
  std::string line;
  char c = 0;
  while (::read(pipefd[0], &c, 1) == 1 && c != '\n') {
    line.push_back(c);
  }
  ::close(pipefd[0]);
  port_ = std::atoi(line.c_str());
}

FixtureServer::~FixtureServer() { stopGroup(pid_); }

std::string FixtureServer::url(const std::string& path) const {
  return strings::cat("http://127.0.0.1:", port_, path);
}

int FixtureServer::hits(const std::string& path) const {
  return std::atoi(sh(strings::cat("python3 -c \"import urllib.request,sys; "
                                   "print(urllib.request.urlopen(sys.argv[1]).read().decode())\" ",
                                   quote(url("/count" + path))))
                       .output.c_str());
}

GitDaemon::GitDaemon(const fs::path& base) {
  for (int attempt = 0; attempt < 5 && port_ == 0; ++attempt) {
    const int port = freePort();
    pid_ = spawn(
        {"git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
         strings::cat("--port=", port), strings::cat("--base-path=", base.string()), base.string()},
        -1, /*quiet=*/true);
    for (int i = 0; i < 250; ++i) {
      if (canConnect(port)) {
        port_ = port;
        break;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;  // Port taken: try another.
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (port_ == 0 && pid_ > 0) {
      stopGroup(pid_);
      pid_ = -1;
    }
  }
}

GitDaemon::~GitDaemon() { stopGroup(pid_); }

std::string GitDaemon::url(const std::string& repo) const {
  return strings::cat("git://127.0.0.1:", port_, "/", repo);
}

namespace {
std::string firstLine(std::string s) {
  if (const auto nl = s.find('\n'); nl != std::string::npos) {
    s.resize(nl);
  }
  return s;
}
}  // namespace

SshServer::SshServer(const fs::path& dir, const std::string& authorized_keys,
                     const std::string& host_key_type, const std::string& extra_config)
    : dir_(dir) {
  fs::create_directories(dir_);
  const struct passwd* pw = ::getpwuid(::geteuid());
  user_ = pw != nullptr ? pw->pw_name : "root";
  if (::geteuid() == 0) {
    fs::create_directories("/run/sshd");  // privilege separation directory
  }
  const fs::path host_key = dir_ / ("host_" + host_key_type);
  shOk(strings::cat("ssh-keygen -q -t ", host_key_type, " -N '' -C host -f ",
                    quote(host_key.string())));
  // "ssh-ed25519 AAAA… host" → without the comment.
  const std::string pub = firstLine(readFile(host_key.string() + ".pub"));
  host_key_ = pub.substr(0, pub.rfind(' '));
  const std::string fp = sh(strings::cat("ssh-keygen -l -E sha256 -f ",
                                         quote(host_key.string() + ".pub")))
                             .output;  // "256 SHA256:… host (ED25519)"
  const auto start = fp.find("SHA256:");
  host_fingerprint_ =
      start == std::string::npos ? "" : fp.substr(start, fp.find(' ', start) - start);
  writeFile(dir_ / "authorized_keys", authorized_keys);
  for (int attempt = 0; attempt < 5 && port_ == 0; ++attempt) {
    const int port = freePort();
    writeFile(dir_ / "sshd_config",
              strings::cat("Port ", port, "\nListenAddress 127.0.0.1\nHostKey ", host_key.string(),
                           "\nAuthorizedKeysFile ", (dir_ / "authorized_keys").string(),
                           "\nPidFile ", (dir_ / "sshd.pid").string(),
                           "\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                           "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
                           "PermitRootLogin prohibit-password\nAllowTcpForwarding no\n"
                           "X11Forwarding no\nPrintMotd no\nLogLevel VERBOSE\n",
                           extra_config, "\n"));
    pid_ =
        spawn({"/bin/sh", "-c",
               strings::cat("exec /usr/sbin/sshd -D -e -f ", quote((dir_ / "sshd_config").string()),
                            " 2>>", quote((dir_ / "sshd.log").string()))},
              -1);
    for (int i = 0; i < 250; ++i) {
      if (canConnect(port)) {
        port_ = port;
        break;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;  // Port taken (or a bad config: see log()).
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (port_ == 0 && pid_ > 0) {
      stopGroup(pid_);
      pid_ = -1;
    }
  }
}

SshServer::~SshServer() { stopGroup(pid_); }

std::string SshServer::url(const fs::path& repo) const {
  return strings::cat("ssh://", user_, "@127.0.0.1:", port_, repo.string());
}

std::string SshServer::log() const { return readFile(dir_ / "sshd.log"); }

SshKey makeSshKey(const fs::path& dir, const std::string& name, const std::string& type,
                  const std::string& format, const std::string& passphrase) {
  fs::create_directories(dir);
  const fs::path path = dir / name;
  shOk(strings::cat("ssh-keygen -q -t ", type, format.empty() ? "" : " -m " + format, " -N ",
                    quote(passphrase), " -C test -f ", quote(path.string())));
  return {readFile(path), readFile(path.string() + ".pub")};
}

SilentServer::SilentServer() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_fd_, 64) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return;
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] {
    while (!stop_) {
      pollfd pfd{listen_fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 50) > 0) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          conns_.push_back(fd);  // held open, never read or written
          ++accepted_;
        }
      }
    }
  });
}

SilentServer::~SilentServer() {
  stop_ = true;
  if (thread_.joinable()) {
    thread_.join();
  }
  for (const int fd : conns_) {
    ::close(fd);
  }
  ::close(listen_fd_);
}

int SilentServer::accepted() const { return accepted_; }

void CapturingSink::write(const log::Record& record) {
  nlohmann::json line = {{"level", std::string(log::levelName(record.level))},
                         {"component", record.component},
                         {"message", record.message},
                         {"fields", record.fields}};
  const std::lock_guard lock(mu_);
  lines_.push_back(line.dump());
}

std::string CapturingSink::all() const {
  const std::lock_guard lock(mu_);
  std::string out;
  for (const auto& l : lines_) {
    out += l + "\n";
  }
  return out;
}

void makeArchive(const fs::path& path, ArchiveFormat format,
                 const std::vector<ArchiveEntry>& entries) {
  struct archive* a = archive_write_new();
  if (format == ArchiveFormat::TarGz) {
    archive_write_add_filter_gzip(a);
    archive_write_set_format_pax_restricted(a);
  } else {
    archive_write_set_format_zip(a);
  }
  ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK) << archive_error_string(a);
  for (const auto& e : entries) {
    struct archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, e.name.c_str());
    archive_entry_set_perm(entry, e.mode);
    switch (e.type) {
      case ArchiveEntry::Type::File:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_size(entry, e.declared_size >= 0
                                          ? e.declared_size
                                          : static_cast<la_int64_t>(e.content.size()));
        break;
      case ArchiveEntry::Type::Dir:
        archive_entry_set_filetype(entry, AE_IFDIR);
        break;
      case ArchiveEntry::Type::Symlink:
        archive_entry_set_filetype(entry, AE_IFLNK);
        archive_entry_set_symlink(entry, e.target.c_str());
        break;
      case ArchiveEntry::Type::Hardlink:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_hardlink(entry, e.target.c_str());
        archive_entry_set_size(entry, 0);
        break;
      case ArchiveEntry::Type::Fifo:
        archive_entry_set_filetype(entry, AE_IFIFO);
        break;
    }
    EXPECT_GE(archive_write_header(a, entry), ARCHIVE_WARN) << archive_error_string(a);
    if (e.type == ArchiveEntry::Type::File && !e.content.empty()) {
      archive_write_data(a, e.content.data(), e.content.size());
    }
    archive_entry_free(entry);
  }
  archive_write_close(a);
  archive_write_free(a);
}

void makeBombTarGz(const fs::path& path, std::uint64_t size) {
  struct archive* a = archive_write_new();
  archive_write_add_filter_gzip(a);
  archive_write_set_format_pax_restricted(a);
  archive_write_open_filename(a, path.c_str());
  struct archive_entry* entry = archive_entry_new();
  archive_entry_set_pathname(entry, "zeros.bin");
  archive_entry_set_filetype(entry, AE_IFREG);
  archive_entry_set_perm(entry, 0644);
  archive_entry_set_size(entry, static_cast<la_int64_t>(size));
  archive_write_header(a, entry);
  const std::vector<char> zeros(1U << 16U, '\0');
  for (std::uint64_t written = 0; written < size; written += zeros.size()) {
    archive_write_data(a, zeros.data(), std::min<std::uint64_t>(zeros.size(), size - written));
  }
  archive_entry_free(entry);
  archive_write_close(a);
  archive_write_free(a);
}

Options testOptions(const fs::path& cache_dir, std::shared_ptr<CapturingSink> sink) {
  Options options;
  options.cache_dir = cache_dir;
  options.command_timeout = std::chrono::seconds(120);
  options.fetch_timeout = std::chrono::seconds(60);
  options.http_idle_timeout = std::chrono::seconds(10);
  options.lock_timeout = std::chrono::seconds(120);
  options.durable = false;
  if (!sink) {
    sink = std::make_shared<CapturingSink>();
  }
  options.logger = log::Logger("installer", std::move(sink));
  return options;
}

std::vector<std::string> listTree(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    out.push_back(it->path().lexically_relative(dir).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

fs::path sourceDir() { return TRIBUTARY_SOURCE_DIR; }

}  // namespace tributary::installer::testing
