#include "tributary/installer/installer.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"

#include "archive_extract.h"
#include "cache.h"
#include "command.h"
#include "git_process.h"
#include "http_fetch.h"
#include "known_hosts.h"
#include "local_copy.h"
#include "util.h"
#include "vcs.h"

#include <sys/stat.h>

#include <map>
#include <optional>
#include <unistd.h>

namespace tributary::installer {

std::vector<std::string> Options::defaultInheritedEnv() {
  return {"PATH",          "HOME",        "USER",        "LOGNAME",     "LANG",
          "LANGUAGE",      "LC_*",        "TZ",          "TMPDIR",      "SSL_CERT_FILE",
          "SSL_CERT_DIR",  "HTTP_PROXY",  "HTTPS_PROXY", "NO_PROXY",    "http_proxy",
          "https_proxy",   "no_proxy",    "GOPATH",      "GOCACHE",     "GOMODCACHE",
          "GOPROXY",       "GOSUMDB",     "GONOSUMDB",   "GOPRIVATE",   "GONOPROXY",
          "GOFLAGS",       "GOTOOLCHAIN", "GOENV",       "CGO_ENABLED", "PIP_INDEX_URL",
          "PIP_CACHE_DIR", "CARGO_HOME",  "RUSTUP_HOME"};
}

namespace {

namespace fs = std::filesystem;
using internal::Cache;
using internal::Clock;
using internal::Deadline;
using internal::FileLock;
using internal::Redactor;
using internal::VersionRecord;
using nlohmann::json;

std::string localPath(const ConnectorSpec& spec) {
  return spec.uri.rfind("file://", 0) == 0 ? spec.uri.substr(7) : spec.uri;
}

// Removes a staging directory unless it was published.
class StagingGuard {
 public:
  StagingGuard(fs::path dir, fs::path trash)
      : dir_(std::move(dir)), parent_(dir_.parent_path()), trash_(std::move(trash)) {}
  ~StagingGuard() {
    if (!dir_.empty()) {
      (void)internal::discardTree(dir_, trash_);
    }
    // staging/<name>/ goes when empty (we hold the name lock: nobody else stages this name).
    std::error_code ec;
    fs::remove(parent_, ec);
  }
  StagingGuard(const StagingGuard&) = delete;
  StagingGuard& operator=(const StagingGuard&) = delete;
  [[nodiscard]] const fs::path& dir() const { return dir_; }
  [[nodiscard]] fs::path root() const { return dir_ / "root"; }
  void release() { dir_.clear(); }

 private:
  fs::path dir_;
  fs::path parent_;
  fs::path trash_;
};

// What a fetch produced, before the version is named.
struct Fetched {
  std::string revision;
  std::string resolved_commit;
  std::string resolved_ref;
  std::string sha256;
  bool via_update_command = false;
};

std::string toStd(absl::string_view s) { return {s.data(), s.size()}; }

bool shellMeta(std::string_view word) {
  return word.find_first_of("'\"\\$`;&|<>(){}*?[]~#") != std::string_view::npos;
}

std::vector<std::string_view> words(std::string_view command) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < command.size()) {
    while (i < command.size() && (command[i] == ' ' || command[i] == '\t' || command[i] == '\n')) {
      ++i;
    }
    const std::size_t start = i;
    while (i < command.size() && command[i] != ' ' && command[i] != '\t' && command[i] != '\n') {
      ++i;
    }
    if (i > start) {
      out.push_back(command.substr(start, i - start));
    }
  }
  return out;
}

bool isAssignment(std::string_view word) {
  const auto eq = word.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return false;
  }
  for (std::size_t i = 0; i < eq; ++i) {
    const char c = word[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
          (i > 0 && c >= '0' && c <= '9'))) {
      return false;
    }
  }
  return true;
}

bool executableFile(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
}

// The program the start command runs must exist: relative to the root (`./s3`) without leaving
// it, or on PATH (`python3 ./x.py`). Shell syntax we cannot judge is let through.
absl::Status checkCommand(std::string_view command, const fs::path& root,
                          const std::string& path_env) {
  const auto all = words(command);
  std::size_t i = 0;
  while (i < all.size() && (isAssignment(all[i]) || all[i] == "exec")) {
    ++i;
  }
  if (i == all.size()) {
    return absl::InvalidArgumentError(strings::cat("command '", command, "' runs no program"));
  }
  const std::string_view program = all[i];
  if (shellMeta(program)) {
    return absl::OkStatus();
  }
  if (program.find('/') != std::string_view::npos) {
    if (program.front() == '/') {
      return absl::InvalidArgumentError(strings::cat(
          "command program '", program,
          "' is absolute: the command runs from the connector's root, use a relative path "
          "(./bin/x) or a program on PATH"));
    }
    const fs::path p = (root / std::string(program)).lexically_normal();
    if (!internal::isWithin(root, p)) {
      return absl::InvalidArgumentError(
          strings::cat("command program '", program, "' escapes the connector directory"));
    }
    std::error_code ec;
    if (!fs::exists(p, ec)) {
      return absl::NotFoundError(strings::cat(
          "command program '", program,
          "' not found in the connector directory after install (did install_command build it?)"));
    }
    if (!executableFile(p)) {
      return absl::FailedPreconditionError(
          strings::cat("command program '", program,
                       "' is not an executable file (chmod +x it in install_command)"));
    }
    return absl::OkStatus();
  }
  for (std::string_view builtin : {"cd", "true", "exec", "eval", "set", "test", "[", "echo", "."}) {
    if (program == builtin) {
      return absl::OkStatus();
    }
  }
  for (const auto dir : strings::split(path_env, ':')) {
    if (!dir.empty() && executableFile(fs::path(std::string(dir)) / std::string(program))) {
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError(
      strings::cat("command program '", program, "' not found on PATH (", path_env, ")"));
}

class InstallerImpl : public Installer {
 public:
  InstallerImpl(Options options, fs::path root)
      : options_(std::move(options)), cache_(std::move(root)) {}

  absl::Status init() { return cache_.init(); }

  absl::StatusOr<Installation> install(const ConnectorSpec& spec, std::stop_token stop) override {
    return run(spec, stop, /*update=*/false);
  }

  absl::StatusOr<Installation> update(const ConnectorSpec& spec, std::stop_token stop) override {
    return run(spec, stop, /*update=*/true);
  }

  absl::StatusOr<GcReport> collectGarbage() override {
    GcReport report;
    std::vector<std::string> names = cache_.names();
    for (auto& n : cache_.stagingNames()) {
      names.push_back(std::move(n));
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    for (const auto& name : names) {
      TRIBUTARY_ASSIGN_OR_RETURN(auto lock, cache_.tryLockName(name));
      if (!lock.has_value()) {
        continue;  // An install of this connector is running; next time.
      }
      report.stale_staging_removed += cache_.cleanStaging(name);
      gcName(name, report);
    }
    cache_.sweepTrash();
    return report;
  }

  absl::StatusOr<std::vector<VersionInfo>> listVersions(std::string_view name) override {
    std::vector<VersionInfo> out;
    for (auto& record : cache_.versions(std::string(name))) {
      out.push_back(std::move(record.info));
    }
    return out;
  }

 private:
  // One install or update call.
  struct Job {
    const ConnectorSpec& spec;
    std::string hash;
    std::optional<Credentials> credentials;
    Redactor redactor;
    log::Logger logger;
    std::stop_token stop;
    Clock::time_point started = Clock::now();
    std::map<std::string, std::string> command_env;
    fs::path git_helper;
  };

  // An ssh remote is trusted only through the secret's known_hosts (or an explicit, logged
  // opt-out). Checked before any connection is made.
  static absl::Status checkSshHostKeys(Job& job) {
    std::string host;
    int port = 22;
    if (!internal::parseSshUrl(job.spec.uri, &host, &port)) {
      return absl::OkStatus();
    }
    const Credentials* creds = job.credentials ? &*job.credentials : nullptr;
    if (creds != nullptr && creds->insecure_skip_host_key_verification) {
      job.logger.warn(
          "SSH host key verification is disabled by the secret: anyone on the network path can "
          "impersonate the git server",
          {{"uri", redactUri(job.spec.uri)}, {"secret", job.spec.secret_ref}});
      return absl::OkStatus();
    }
    if (creds == nullptr || creds->known_hosts.empty()) {
      return absl::FailedPreconditionError(strings::cat(
          "ssh remote ", redactUri(job.spec.uri),
          " needs the server's host key: add a "
          "`known_hosts` key to ",
          job.spec.secret_ref.empty() ? std::string("the connector's secret (set secret_ref)")
                                      : strings::cat("secret '", job.spec.secret_ref, "'"),
          " with a line for ", internal::knownHostsName(host, port), " (e.g. from `ssh-keyscan",
          port == 22 ? std::string() : strings::cat(" -p ", port), " ", host,
          "`, checked against a trusted source)"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Installation> run(const ConnectorSpec& spec, std::stop_token stop, bool update) {
    TRIBUTARY_RETURN_IF_ERROR(validate(spec));
    Job job{spec,
            specHash(spec),
            std::nullopt,
            Redactor(),
            options_.logger.with({{"connector", spec.name}}),
            std::move(stop),
            Clock::now(),
            {},
            {}};
    TRIBUTARY_RETURN_IF_ERROR(prepare(job));
    auto result = runLocked(job, update);
    if (!result.ok()) {
      const absl::Status status = job.redactor.apply(result.status());
      job.logger.error(
          update ? "update failed" : "install failed",
          {{"error", toStd(status.message())}, {"code", absl::StatusCodeToString(status.code())}});
      return status;
    }
    return result;
  }

  absl::Status prepare(Job& job) {
    const ConnectorSpec& spec = job.spec;
    // Credentials embedded in the URI are secrets too.
    if (const auto scheme = spec.uri.find("://"); scheme != std::string::npos) {
      const auto at = spec.uri.find('@', scheme + 3);
      const auto slash = spec.uri.find('/', scheme + 3);
      if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
        const std::string userinfo = spec.uri.substr(scheme + 3, at - scheme - 3);
        if (const auto colon = userinfo.find(':'); colon != std::string::npos) {
          job.redactor.add(userinfo.substr(colon + 1));
        } else if (userinfo != "git") {
          job.redactor.add(userinfo);
        }
      }
    }
    if (!spec.secret_ref.empty()) {
      if (!options_.secrets) {
        return absl::FailedPreconditionError(
            strings::cat("connector '", spec.name, "' references secret '", spec.secret_ref,
                         "' but the installer has no secret resolver"));
      }
      auto creds = options_.secrets->resolve(spec.secret_ref);
      if (!creds.ok()) {
        return absl::Status(
            creds.status().code(),
            strings::cat("cannot resolve secret '", spec.secret_ref, "' of connector '", spec.name,
                         "': ", creds.status().message()));
      }
      job.credentials = *std::move(creds);
      for (auto& value : job.credentials->secretValues()) {
        job.redactor.add(std::move(value));
      }
    }
    if (spec.source == Source::Local) {
      TRIBUTARY_RETURN_IF_ERROR(checkLocalSource(localPath(spec)));
    }
    if (spec.source == Source::Vcs) {
      TRIBUTARY_RETURN_IF_ERROR(checkSshHostKeys(job));
      TRIBUTARY_ASSIGN_OR_RETURN(job.git_helper, internal::findGitHelper(options_.git_helper));
    }
    job.command_env = internal::buildEnv(options_.inherited_env, options_.command_env, spec.env);
    job.command_env["TRIBUTARY_CONNECTOR_NAME"] = spec.name;
    return absl::OkStatus();
  }

  absl::Status checkLocalSource(const std::string& path) const {
    std::error_code ec;
    const fs::path source = fs::weakly_canonical(path, ec);
    if (ec) {
      return internal::errorCodeStatus(ec, strings::cat("local source ", path));
    }
    if (!fs::exists(source, ec)) {
      return absl::NotFoundError(strings::cat("local source ", path, " does not exist"));
    }
    if (!options_.local_roots.empty()) {
      bool allowed = false;
      for (const auto& allowed_root : options_.local_roots) {
        const fs::path r = fs::weakly_canonical(allowed_root, ec);
        if (!ec && internal::isWithin(r, source)) {
          allowed = true;
          break;
        }
      }
      if (!allowed) {
        return absl::PermissionDeniedError(strings::cat(
            "local source ", path, " is outside the directories allowed for Local connectors"));
      }
    }
    if (internal::isWithin(source, cache_.root()) || internal::isWithin(cache_.root(), source)) {
      return absl::InvalidArgumentError(strings::cat(
          "local source ", path, " overlaps the installer cache ", cache_.root().string()));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Installation> runLocked(Job& job, bool update) {
    const ConnectorSpec& spec = job.spec;
    TRIBUTARY_ASSIGN_OR_RETURN(
        const FileLock lock,
        cache_.lockName(spec.name, Deadline::after(options_.lock_timeout), job.stop));
    if (const int stale = cache_.cleanStaging(spec.name); stale > 0) {
      job.logger.warn("removed unfinished installs left by a crash", {{"count", stale}});
    }
    std::optional<VersionRecord> current;
    for (auto& record : cache_.versions(spec.name)) {
      if (record.info.spec_hash == job.hash && record.manifest.is_object()) {
        current = std::move(record);
        break;
      }
    }
    absl::StatusOr<Installation> result;
    if (current && !update) {
      result = reuse(job, *current, "reusing installed version");
    } else if (current && !spec.update_command.empty()) {
      result = updateWithCommand(job, *current);
    } else if (current && spec.source == Source::Vcs) {
      result = updateVcs(job, *current);
    } else {
      // Nothing installed yet, or an HTTP/Local update: fetch again; a new version appears only
      // if the content changed.
      result = freshInstall(job);
    }
    if (result.ok()) {
      GcReport report;
      gcName(spec.name, report);
    }
    return result;
  }

  absl::StatusOr<Installation> freshInstall(Job& job) {
    const ConnectorSpec& spec = job.spec;
    job.logger.info("installing connector", {{"source", std::string(sourceName(spec.source))},
                                             {"uri", redactUri(spec.uri)},
                                             {"ref", spec.ref},
                                             {"spec_hash", job.hash}});
    TRIBUTARY_ASSIGN_OR_RETURN(const fs::path dir, cache_.createStaging(spec.name));
    StagingGuard staging(dir, cache_.trashDir());
    Fetched fetched;
    switch (spec.source) {
      case Source::Vcs: {
        TRIBUTARY_ASSIGN_OR_RETURN(
            const internal::VcsRevision rev,
            internal::fetchAndCheckoutIsolated(job.git_helper, vcsSpec(job), staging.root(),
                                               options_.fetch_timeout, job.stop));
        fetched.revision = rev.commit;
        fetched.resolved_commit = rev.commit;
        fetched.resolved_ref = rev.resolved_ref;
        break;
      }
      case Source::Http: {
        TRIBUTARY_ASSIGN_OR_RETURN(fetched, fetchHttp(job, staging));
        break;
      }
      case Source::Local: {
        const fs::path source = localPath(spec);
        TRIBUTARY_ASSIGN_OR_RETURN(const std::string before,
                                   internal::treeDigest(source, job.stop));
        TRIBUTARY_RETURN_IF_ERROR(internal::copyLocal(source, staging.root(), job.stop));
        const fs::path copied =
            fs::is_directory(source) ? staging.root() : staging.root() / source.filename();
        TRIBUTARY_ASSIGN_OR_RETURN(const std::string after, internal::treeDigest(copied, job.stop));
        if (before != after) {
          return absl::AbortedError(strings::cat("local source ", source.string(),
                                                 " changed while it was being copied; retry"));
        }
        fetched.revision = before.substr(0, 16);
        break;
      }
    }
    return finish(job, staging, fetched, /*run_install=*/true);
  }

  absl::StatusOr<Fetched> fetchHttp(Job& job, StagingGuard& staging) {
    const ConnectorSpec& spec = job.spec;
    const fs::path download_dir = staging.dir() / "download";
    std::error_code ec;
    fs::create_directory(download_dir, ec);
    if (ec) {
      return internal::errorCodeStatus(ec, "cannot create the download directory");
    }
    internal::DownloadSpec d;
    d.url = spec.uri;
    d.dest_dir = download_dir;
    d.file_name = internal::fileNameFromUrl(spec.uri);
    d.max_bytes = options_.max_download_bytes;
    d.idle_timeout = options_.http_idle_timeout;
    d.total_timeout = options_.fetch_timeout;
    d.max_redirects = options_.max_redirects;
    d.credentials = job.credentials ? &*job.credentials : nullptr;
    TRIBUTARY_ASSIGN_OR_RETURN(const internal::Download got, internal::download(d, job.stop));
    if (!spec.sha256.empty() && strings::toLower(spec.sha256) != got.sha256) {
      return absl::DataLossError(strings::cat("checksum mismatch for ", redactUri(spec.uri),
                                              ": expected sha256 ", strings::toLower(spec.sha256),
                                              ", got ", got.sha256));
    }
    job.logger.info("downloaded", {{"file", d.file_name},
                                   {"bytes", got.bytes},
                                   {"sha256", got.sha256},
                                   {"redirects", got.redirects}});
    const internal::ArchiveKind kind = internal::archiveKindOf(d.file_name);
    if (kind != internal::ArchiveKind::None) {
      internal::ExtractLimits limits;
      limits.max_bytes = options_.max_unpacked_bytes;
      limits.max_entries = options_.max_archive_entries;
      TRIBUTARY_ASSIGN_OR_RETURN(
          const internal::ExtractStats stats,
          internal::extractArchive(got.file, kind, staging.root(), limits, job.stop));
      job.logger.info("unpacked",
                      {{"file", d.file_name}, {"entries", stats.entries}, {"bytes", stats.bytes}});
    } else {
      const fs::path target = staging.root() / d.file_name;
      if (::rename(got.file.c_str(), target.c_str()) != 0) {
        return internal::errnoStatus(errno,
                                     strings::cat("cannot move the download to ", target.string()));
      }
      // A downloaded program is meant to run (c1 connectors are usually one binary).
      ::chmod(target.c_str(), 0755);
    }
    TRIBUTARY_RETURN_IF_ERROR(internal::removeTree(download_dir));
    Fetched fetched;
    fetched.sha256 = got.sha256;
    fetched.revision = got.sha256.substr(0, 16);
    return fetched;
  }

  absl::StatusOr<Installation> updateVcs(Job& job, const VersionRecord& current) {
    const ConnectorSpec& spec = job.spec;
    TRIBUTARY_ASSIGN_OR_RETURN(const internal::VcsRevision remote,
                               internal::resolveRemoteIsolated(job.git_helper, vcsSpec(job),
                                                               options_.fetch_timeout, job.stop));
    const std::string current_commit = current.manifest.value("resolved_commit", "");
    if (remote.commit == current_commit) {
      return reuse(job, current, "already up to date");
    }
    job.logger.info("updating connector",
                    {{"from", current_commit}, {"to", remote.commit}, {"ref", spec.ref}});
    TRIBUTARY_ASSIGN_OR_RETURN(const fs::path dir, cache_.createStaging(spec.name));
    StagingGuard staging(dir, cache_.trashDir());
    // Start from the current version (its objects and build outputs): only new objects are
    // fetched and incremental builds stay incremental.
    TRIBUTARY_RETURN_IF_ERROR(internal::copyLocal(current.info.root, staging.root(), job.stop));
    TRIBUTARY_ASSIGN_OR_RETURN(
        const internal::VcsRevision rev,
        internal::fetchAndCheckoutIsolated(job.git_helper, vcsSpec(job), staging.root(),
                                           options_.fetch_timeout, job.stop));
    Fetched fetched;
    fetched.revision = rev.commit;
    fetched.resolved_commit = rev.commit;
    fetched.resolved_ref = rev.resolved_ref;
    return finish(job, staging, fetched, /*run_install=*/true);
  }

  absl::StatusOr<Installation> updateWithCommand(Job& job, const VersionRecord& current) {
    const ConnectorSpec& spec = job.spec;
    job.logger.info("updating connector with update_command", {{"from", current.info.version}});
    TRIBUTARY_ASSIGN_OR_RETURN(const fs::path dir, cache_.createStaging(spec.name));
    StagingGuard staging(dir, cache_.trashDir());
    TRIBUTARY_RETURN_IF_ERROR(internal::copyLocal(current.info.root, staging.root(), job.stop));
    TRIBUTARY_RETURN_IF_ERROR(runShell(job, "update_command", spec.update_command, staging.root()));
    Fetched fetched;
    fetched.via_update_command = true;
    if (spec.source == Source::Vcs) {
      TRIBUTARY_ASSIGN_OR_RETURN(fetched.resolved_commit, internal::headCommit(staging.root()));
      fetched.revision = fetched.resolved_commit;
      fetched.resolved_ref = current.manifest.value("resolved_ref", "");
    } else {
      TRIBUTARY_ASSIGN_OR_RETURN(const std::string digest,
                                 internal::treeDigest(staging.root(), job.stop));
      fetched.revision = digest.substr(0, 16);
      fetched.sha256 = current.manifest.value("sha256", "");
    }
    return finish(job, staging, fetched, /*run_install=*/false);
  }

  // Names the version, runs install_command, checks the command, publishes.
  absl::StatusOr<Installation> finish(Job& job, StagingGuard& staging, const Fetched& fetched,
                                      bool run_install) {
    const ConnectorSpec& spec = job.spec;
    const std::string version = strings::cat(job.hash, "-", fetched.revision);
    const fs::path target = cache_.versionDir(spec.name, version);
    std::error_code ec;
    if (fs::exists(target, ec)) {
      // The same content is installed already (an update found nothing new, or went back to
      // an installed commit).
      for (auto& record : cache_.versions(spec.name)) {
        if (record.info.version == version) {
          return reuse(job, record, "version already installed");
        }
      }
    }
    if (run_install && !spec.install_command.empty()) {
      TRIBUTARY_RETURN_IF_ERROR(
          runShell(job, "install_command", spec.install_command, staging.root()));
    }
    const auto path_it = job.spec.env.find("PATH");
    TRIBUTARY_RETURN_IF_ERROR(
        checkCommand(spec.command, staging.root(),
                     path_it != job.spec.env.end() ? path_it->second : job.command_env["PATH"]));
    const auto duration =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - job.started);
    json manifest = {{"format", 1},
                     {"name", spec.name},
                     {"version", version},
                     {"spec_hash", job.hash},
                     {"source", std::string(sourceName(spec.source))},
                     {"uri", redactUri(spec.uri)},
                     {"ref", spec.ref},
                     {"resolved_ref", fetched.resolved_ref},
                     {"resolved_commit", fetched.resolved_commit},
                     {"sha256", fetched.sha256},
                     {"revision", fetched.revision},
                     {"install_command", spec.install_command},
                     {"via_update_command", fetched.via_update_command},
                     {"installed_at_ns", internal::nowNanos()},
                     {"install_duration_ms", duration.count()}};
    TRIBUTARY_RETURN_IF_ERROR(cache_.writeMetadata(staging.dir(), manifest));
    TRIBUTARY_RETURN_IF_ERROR(cache_.publish(staging.dir(), target, options_.durable));
    staging.release();
    TRIBUTARY_ASSIGN_OR_RETURN(auto lease, cache_.lease(target));
    Installation inst;
    inst.name = spec.name;
    inst.version = version;
    inst.spec_hash = job.hash;
    inst.revision = fetched.revision;
    inst.resolved_commit = fetched.resolved_commit;
    inst.resolved_ref = fetched.resolved_ref;
    inst.sha256 = fetched.sha256;
    inst.root = target / "root";
    inst.command = spec.command;
    inst.env = spec.env;
    inst.installed_now = true;
    inst.install_duration = duration;
    inst.lease = std::move(lease);
    job.logger.info("installed connector", {{"version", version},
                                            {"commit", fetched.resolved_commit},
                                            {"duration_ms", duration.count()}});
    return inst;
  }

  absl::StatusOr<Installation> reuse(Job& job, const VersionRecord& record, std::string_view why) {
    const ConnectorSpec& spec = job.spec;
    const fs::path dir = record.info.root.parent_path();
    TRIBUTARY_ASSIGN_OR_RETURN(auto lease, cache_.lease(dir));
    const auto path_it = job.spec.env.find("PATH");
    // The command is not part of the version: check it against this spec.
    TRIBUTARY_RETURN_IF_ERROR(
        checkCommand(spec.command, record.info.root,
                     path_it != job.spec.env.end() ? path_it->second : job.command_env["PATH"]));
    TRIBUTARY_RETURN_IF_ERROR(cache_.select(dir));
    Installation inst;
    inst.name = spec.name;
    inst.version = record.info.version;
    inst.spec_hash = record.info.spec_hash;
    inst.revision = record.info.revision;
    inst.resolved_commit = record.manifest.value("resolved_commit", "");
    inst.resolved_ref = record.manifest.value("resolved_ref", "");
    inst.sha256 = record.manifest.value("sha256", "");
    inst.root = record.info.root;
    inst.command = spec.command;
    inst.env = spec.env;
    inst.installed_now = false;
    inst.lease = std::move(lease);
    job.logger.debug(why, {{"version", inst.version}});
    return inst;
  }

  absl::Status runShell(Job& job, std::string_view what, const std::string& command,
                        const fs::path& dir) {
    internal::CommandSpec cmd;
    cmd.command = command;
    cmd.dir = dir;
    cmd.env = job.command_env;
    cmd.timeout = options_.command_timeout;
    cmd.tail_bytes = options_.output_tail_bytes;
    job.logger.info(strings::cat("running ", what), {{"command", command}});
    TRIBUTARY_ASSIGN_OR_RETURN(const internal::CommandResult result,
                               internal::runCommand(cmd, job.stop));
    if (!result.succeeded()) {
      return job.redactor.apply(internal::commandError(what, cmd, result));
    }
    job.logger.info(strings::cat(what, " succeeded"), {{"duration_ms", result.duration.count()},
                                                       {"output_bytes", result.output_bytes}});
    return absl::OkStatus();
  }

  internal::VcsSpec vcsSpec(const Job& job) const {
    internal::VcsSpec v;
    v.url = job.spec.uri;
    v.ref = job.spec.ref;
    v.credentials = job.credentials ? &*job.credentials : nullptr;
    v.deadline = Deadline::after(options_.fetch_timeout);
    return v;
  }

  // Caller holds the name lock. Connectors of the same name may differ (two namespaces or
  // sources with their own spec): each spec hash keeps its own `keep_versions` most recently
  // selected versions, so one spec's installs and updates never remove another's current one.
  // Only a spec not selected for `spec_retention` is left to the name-wide `keep_versions`.
  void gcName(const std::string& name, GcReport& report) {
    const auto records = cache_.versions(name);  // Most recently selected first.
    const std::int64_t forgotten_before =
        internal::nowNanos() -
        std::chrono::duration_cast<std::chrono::nanoseconds>(options_.spec_retention).count();
    struct SpecKept {
      bool remembered = false;
      int kept = 0;
    };
    std::map<std::string, SpecKept> specs;
    int kept = 0;
    for (const auto& record : records) {
      if (record.manifest.is_object()) {
        // A spec's newest selection comes first; it decides whether the spec is remembered.
        const auto [it, first] = specs.try_emplace(record.info.spec_hash);
        SpecKept& spec = it->second;
        if (first) {
          spec.remembered = record.info.selected_at_ns >= forgotten_before;
        }
        if (kept < options_.keep_versions ||
            (spec.remembered && spec.kept < options_.keep_versions)) {
          ++kept;
          ++spec.kept;
          continue;
        }
      }
      const fs::path dir = record.info.root.parent_path();
      auto unused = cache_.lockUnused(dir);
      if (!unused.ok() || !unused->has_value()) {
        report.kept_in_use.push_back(strings::cat(name, "/", record.info.version));
        continue;
      }
      if (absl::Status s = cache_.removeVersion(dir); s.ok()) {
        report.removed.push_back(strings::cat(name, "/", record.info.version));
        options_.logger.info("removed unused version",
                             {{"connector", name}, {"version", record.info.version}});
      } else {
        options_.logger.warn(
            "cannot remove version",
            {{"connector", name}, {"version", record.info.version}, {"error", toStd(s.message())}});
      }
    }
    std::error_code ec;
    fs::remove(cache_.connectorDir(name), ec);  // Only if empty.
  }

  Options options_;
  Cache cache_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Installer>> Installer::create(Options options) {
  if (options.cache_dir.empty()) {
    return absl::InvalidArgumentError("installer cache_dir is not set");
  }
  std::error_code ec;
  fs::create_directories(options.cache_dir, ec);
  if (ec) {
    return internal::errorCodeStatus(ec,
                                     strings::cat("cannot create ", options.cache_dir.string()));
  }
  const fs::path root = fs::canonical(options.cache_dir, ec);
  if (ec) {
    return internal::errorCodeStatus(ec,
                                     strings::cat("cannot resolve ", options.cache_dir.string()));
  }
  if (options.keep_versions < 1) {
    options.keep_versions = 1;
  }
  auto installer = std::make_unique<InstallerImpl>(std::move(options), root);
  TRIBUTARY_RETURN_IF_ERROR(installer->init());
  return installer;
}

}  // namespace tributary::installer
