#include "git_process.h"

#include "tributary/common/strings.h"
#include "tributary/installer/spec.h"

#include "command.h"

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <unistd.h>

namespace tributary::installer::internal {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kHelperName = "tributary-git-helper";

void wipe(std::string& s) {
  if (!s.empty()) {
    OPENSSL_cleanse(s.data(), s.size());
  }
}

bool executable(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0;
}

std::string seconds(std::chrono::milliseconds d) {
  const auto ms = d.count();
  return strings::cat(ms / 1000, ".", (ms % 1000) / 100, "s");
}

json credentialsJson(const Credentials& c) {
  return {{"username", c.username},
          {"token", c.token},
          {"password", c.password},
          {"ssh_private_key", c.ssh_private_key},
          {"ssh_public_key", c.ssh_public_key},
          {"ssh_passphrase", c.ssh_passphrase},
          {"known_hosts", c.known_hosts},
          {"insecure_skip_host_key_verification", c.insecure_skip_host_key_verification}};
}

Credentials credentialsFromJson(const json& j) {
  Credentials c;
  c.username = j.value("username", "");
  c.token = j.value("token", "");
  c.password = j.value("password", "");
  c.ssh_private_key = j.value("ssh_private_key", "");
  c.ssh_public_key = j.value("ssh_public_key", "");
  c.ssh_passphrase = j.value("ssh_passphrase", "");
  c.known_hosts = j.value("known_hosts", "");
  c.insecure_skip_host_key_verification = j.value("insecure_skip_host_key_verification", false);
  return c;
}

absl::StatusOr<VcsRevision> runHelper(const fs::path& helper, std::string_view op,
                                      const VcsSpec& spec, const fs::path& workdir,
                                      std::chrono::milliseconds timeout,
                                      const std::stop_token& stop) {
  json request = {{"op", op}, {"url", spec.url}, {"ref", spec.ref}, {"workdir", workdir.string()}};
  if (spec.credentials != nullptr) {
    request["credentials"] = credentialsJson(*spec.credentials);
  }
  ProcessSpec process;
  process.argv = {helper.string()};
  process.input = request.dump();
  for (auto& [key, value] : request["credentials"].items()) {
    if (value.is_string()) {
      wipe(value.get_ref<std::string&>());
    }
  }
  process.deadline = timeout.count() <= 0 || timeout == std::chrono::milliseconds::max()
                         ? Clock::time_point::max()
                         : Clock::now() + timeout;
  auto result = runProcess(process, stop);
  wipe(process.input);
  const std::string url = redactUri(spec.url);
  if (!result.ok()) {
    return absl::Status(result.status().code(), strings::cat("cannot run the git helper for ", url,
                                                             ": ", result.status().message()));
  }
  if (result->timed_out) {
    return absl::DeadlineExceededError(
        strings::cat("timed out after ", seconds(timeout), " fetching ", url));
  }
  if (result->cancelled) {
    return absl::CancelledError(strings::cat("cancelled while fetching ", url));
  }
  const json answer = json::parse(result->output, nullptr, /*allow_exceptions=*/false);
  if (!answer.is_object() || !answer.contains("ok")) {
    std::string how = result->signal != 0 ? strings::cat("was killed by signal ", result->signal)
                                          : strings::cat("exited with code ", result->exit_code);
    return absl::InternalError(strings::cat(
        "the git helper ", how, " without an answer while fetching ", url,
        result->errors.empty() ? std::string() : strings::cat("; stderr: ", result->errors)));
  }
  if (!answer.value("ok", false)) {
    const int code = answer.value("code", static_cast<int>(absl::StatusCode::kUnknown));
    return absl::Status(
        code > 0 && code <= 16 ? static_cast<absl::StatusCode>(code) : absl::StatusCode::kUnknown,
        answer.value("message", "git helper failed"));
  }
  return VcsRevision{answer.value("commit", ""), answer.value("resolved_ref", "")};
}

}  // namespace

absl::StatusOr<fs::path> findGitHelper(const fs::path& configured) {
  std::vector<fs::path> candidates;
  if (!configured.empty()) {
    candidates.push_back(configured);
  } else {
    if (const char* env = std::getenv("TRIBUTARY_GIT_HELPER"); env != nullptr && *env != '\0') {
      candidates.emplace_back(env);
    } else {
      std::error_code ec;
      const fs::path self = fs::read_symlink("/proc/self/exe", ec);
      if (!ec) {
        candidates.push_back(self.parent_path() / kHelperName);
      }
#ifdef TRIBUTARY_GIT_HELPER_BUILD_PATH
      candidates.emplace_back(TRIBUTARY_GIT_HELPER_BUILD_PATH);
#endif
    }
  }
  for (const auto& c : candidates) {
    if (executable(c)) {
      return c;
    }
  }
  std::vector<std::string> names;
  for (const auto& c : candidates) {
    names.push_back(c.string());
  }
  return absl::FailedPreconditionError(strings::cat(
      "the git helper ", kHelperName, " was not found (looked at ", strings::join(names, ", "),
      "); install it next to the program or set Options::git_helper"));
}

absl::StatusOr<VcsRevision> resolveRemoteIsolated(const fs::path& helper, const VcsSpec& spec,
                                                  std::chrono::milliseconds timeout,
                                                  const std::stop_token& stop) {
  return runHelper(helper, "resolve", spec, {}, timeout, stop);
}

absl::StatusOr<VcsRevision> fetchAndCheckoutIsolated(const fs::path& helper, const VcsSpec& spec,
                                                     const fs::path& workdir,
                                                     std::chrono::milliseconds timeout,
                                                     const std::stop_token& stop) {
  return runHelper(helper, "fetch", spec, workdir, timeout, stop);
}

int gitHelperMain() {
  std::string input;
  std::array<char, 8192> buf{};
  while (true) {
    const ssize_t n = ::read(0, buf.data(), buf.size());
    if (n > 0) {
      input.append(buf.data(), static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  OPENSSL_cleanse(buf.data(), buf.size());
  json request = json::parse(input, nullptr, /*allow_exceptions=*/false);
  wipe(input);
  auto reply = [](const absl::StatusOr<VcsRevision>& r) {
    json answer;
    if (r.ok()) {
      answer = {{"ok", true}, {"commit", r->commit}, {"resolved_ref", r->resolved_ref}};
    } else {
      answer = {{"ok", false},
                {"code", static_cast<int>(r.status().code())},
                {"message", std::string(r.status().message())}};
    }
    const std::string out = answer.dump() + "\n";
    std::size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::write(1, out.data() + done, out.size() - done);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        return 1;
      }
      done += static_cast<std::size_t>(n);
    }
    return 0;
  };
  if (!request.is_object()) {
    return reply(absl::InvalidArgumentError("git helper: the request is not a JSON object"));
  }
  Credentials credentials;
  const bool has_credentials = request.contains("credentials");
  if (has_credentials) {
    credentials = credentialsFromJson(request["credentials"]);
    for (auto& [key, value] : request["credentials"].items()) {
      if (value.is_string()) {
        wipe(value.get_ref<std::string&>());
      }
    }
  }
  VcsSpec spec;
  spec.url = request.value("url", "");
  spec.ref = request.value("ref", "");
  spec.credentials = has_credentials ? &credentials : nullptr;
  const std::string op = request.value("op", "");
  if (op == "resolve") {
    return reply(resolveRemote(spec));
  }
  if (op == "fetch") {
    return reply(fetchAndCheckout(spec, request.value("workdir", "")));
  }
  return reply(absl::InvalidArgumentError(strings::cat("git helper: unknown op '", op, "'")));
}

}  // namespace tributary::installer::internal
