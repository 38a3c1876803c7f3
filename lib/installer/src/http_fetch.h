#pragma once

// HTTP(S) downloads with cpprestsdk: redirects followed by hand (so credentials never follow a
// redirect to another origin and https never downgrades to http), a size limit enforced while
// streaming, an idle timeout and an overall deadline, SHA-256 computed on the way.

#include "tributary/installer/secrets.h"

#include "absl/status/statusor.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <stop_token>
#include <string>

namespace tributary::installer::internal {

struct DownloadSpec {
  std::string url;
  std::filesystem::path dest_dir;  ///< Existing directory; the file is created inside.
  std::string file_name;           ///< Name of the file to create (see fileNameFromUrl).
  std::uint64_t max_bytes = 1ULL << 30U;
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  std::chrono::milliseconds total_timeout{std::chrono::minutes(10)};
  int max_redirects = 10;
  const Credentials* credentials = nullptr;  ///< Sent to the URL's origin only.
};

struct Download {
  std::filesystem::path file;
  std::string sha256;
  std::uint64_t bytes = 0;
  std::string final_url;
  int redirects = 0;
};

/// Downloads `spec.url`. Errors: NotFound (404/410), PermissionDenied (401/403), Unavailable
/// (connection failures, 5xx), DeadlineExceeded (timeouts), ResourceExhausted (size limit),
/// InvalidArgument (bad redirect), Cancelled. On error the partial file is removed.
absl::StatusOr<Download> download(const DownloadSpec& spec, std::stop_token stop = {});

/// The last path segment of the URL, percent-decoded, if it is a safe file name; else
/// "download". Query and fragment are ignored.
std::string fileNameFromUrl(std::string_view url);

}  // namespace tributary::installer::internal
