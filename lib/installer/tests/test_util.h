#pragma once

// Helpers for the installer tests: temp dirs, shell commands, git repositories, the loopback
// fixture servers (HTTP + git smart HTTP, git daemon), archives with arbitrary entries.

#include "tributary/common/log.h"
#include "tributary/installer/installer.h"
#include "tributary/testing/temp_dir.h"

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tributary::installer::testing {

namespace fs = std::filesystem;

using TempDir = harness::TempDir;

struct ShellResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};
/// Runs `/bin/sh -c command` (optionally in `dir`) and returns exit code and output.
ShellResult sh(const std::string& command, const fs::path& dir = {});
/// Like sh() but fails the current test on a non-zero exit.
std::string shOk(const std::string& command, const fs::path& dir = {});

std::string quote(const std::string& s);
void writeFile(const fs::path& path, const std::string& content,
               fs::perms perms = static_cast<fs::perms>(0644));
std::string readFile(const fs::path& path);

/// A bare repository (what servers serve) plus a work tree pushing to it.
class GitRepo {
 public:
  /// Creates `<parent>/<name>.git` (bare, default branch `default_branch`) and a work tree.
  GitRepo(const fs::path& parent, const std::string& name,
          const std::string& default_branch = "main");
  [[nodiscard]] const fs::path& bare() const { return bare_; }
  [[nodiscard]] const fs::path& work() const { return work_; }
  [[nodiscard]] std::string fileUrl() const { return "file://" + bare_.string(); }

  /// Writes files (path → content), commits everything, pushes the current branch; returns the
  /// commit id.
  std::string commit(const std::map<std::string, std::string>& files, const std::string& message);
  void checkoutNewBranch(const std::string& branch);
  void checkout(const std::string& branch);
  void tag(const std::string& name, bool annotated);
  [[nodiscard]] std::string head() const;

 private:
  fs::path bare_;
  fs::path work_;
};

/// The Python fixture server (fixture_server.py).
class FixtureServer {
 public:
  FixtureServer(const fs::path& files_dir, const fs::path& git_root, const std::string& token);
  ~FixtureServer();
  FixtureServer(const FixtureServer&) = delete;
  FixtureServer& operator=(const FixtureServer&) = delete;
  [[nodiscard]] bool ok() const { return port_ > 0; }
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] std::string url(const std::string& path) const;
  /// How many requests `path` got.
  int hits(const std::string& path) const;

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

/// `git daemon` on a free loopback port serving `base` (read-only, every repository).
class GitDaemon {
 public:
  explicit GitDaemon(const fs::path& base);
  ~GitDaemon();
  GitDaemon(const GitDaemon&) = delete;
  GitDaemon& operator=(const GitDaemon&) = delete;
  [[nodiscard]] bool ok() const { return port_ > 0; }
  [[nodiscard]] std::string url(const std::string& repo) const;

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

/// A private `sshd` on a free loopback port: a fresh host key (ssh-keygen), only public-key
/// logins with `authorized_keys`, the login of the user running the test (root in CI: sshd then
/// needs /run/sshd, which is created). `extra_config` is appended to sshd_config.
class SshServer {
 public:
  SshServer(const fs::path& dir, const std::string& authorized_keys,
            const std::string& host_key_type = "ed25519", const std::string& extra_config = "");
  ~SshServer();
  SshServer(const SshServer&) = delete;
  SshServer& operator=(const SshServer&) = delete;
  [[nodiscard]] bool ok() const { return port_ > 0; }
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] const std::string& user() const { return user_; }
  /// "ssh-ed25519 AAAA…" (the .pub file without its comment).
  [[nodiscard]] const std::string& hostKey() const { return host_key_; }
  /// "SHA256:…" as `ssh-keygen -l` prints it.
  [[nodiscard]] const std::string& hostFingerprint() const { return host_fingerprint_; }
  /// `ssh://<user>@127.0.0.1:<port><absolute path>`
  [[nodiscard]] std::string url(const fs::path& repo) const;
  [[nodiscard]] std::string log() const;

 private:
  fs::path dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string user_;
  std::string host_key_;
  std::string host_fingerprint_;
};

/// A client key pair made by ssh-keygen: `type` ed25519, ecdsa or rsa; `format` "" (OpenSSH's
/// own) or "PEM".
struct SshKey {
  std::string private_key;
  std::string public_key;
};
SshKey makeSshKey(const fs::path& dir, const std::string& name, const std::string& type,
                  const std::string& format = "", const std::string& passphrase = "");

/// A TCP server on a free loopback port that accepts every connection and then neither reads
/// nor writes: a stalled git server.
class SilentServer {
 public:
  SilentServer();
  ~SilentServer();
  SilentServer(const SilentServer&) = delete;
  SilentServer& operator=(const SilentServer&) = delete;
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] int accepted() const;

 private:
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::vector<int> conns_;
  std::thread thread_;
};

/// Keeps every log record (to check that secrets never appear).
class CapturingSink : public log::Sink {
 public:
  void write(const log::Record& record) override;
  [[nodiscard]] std::string all() const;  ///< Every record as one JSON line each.

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

/// Archive entries for makeArchive.
struct ArchiveEntry {
  enum class Type { File, Dir, Symlink, Hardlink, Fifo };
  std::string name;
  Type type = Type::File;
  std::string content;  // File
  std::string target;   // Symlink / Hardlink
  unsigned mode = 0644;
  std::int64_t declared_size = -1;  // File: size in the header if different from content
};
enum class ArchiveFormat { TarGz, Zip };
/// Writes an archive with exactly these entries (no sanitizing: tests build hostile ones).
void makeArchive(const fs::path& path, ArchiveFormat format,
                 const std::vector<ArchiveEntry>& entries);
/// A .tar.gz with one file of `size` zero bytes (compresses ~1000:1).
void makeBombTarGz(const fs::path& path, std::uint64_t size);

/// Options for a cache under `dir` with short timeouts and a capturing logger.
Options testOptions(const fs::path& cache_dir, std::shared_ptr<CapturingSink> sink = nullptr);

/// Relative paths of everything under `dir` (files, dirs, links), sorted.
std::vector<std::string> listTree(const fs::path& dir);

/// Absolute path of the source tree (for sdk/go).
fs::path sourceDir();

}  // namespace tributary::installer::testing
