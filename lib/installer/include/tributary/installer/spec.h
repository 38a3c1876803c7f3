#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <map>
#include <string>
#include <string_view>
#include <vector>

/// What to install: c1's connector JSON (`{name, description, source, uri, install_command,
/// update_command, command}`) plus `ref` (VCS), `sha256` (HTTP), `env` and `secret_ref`.
namespace tributary::installer {

enum class Source { Vcs, Http, Local };

/// "VCS", "HTTP" or "Local" (c1's spelling).
std::string_view sourceName(Source source);

/// One connector. Plain data; validate() before use (the Installer does it again).
struct ConnectorSpec {
  /// Cache key and directory name: 1-128 of [A-Za-z0-9._-], starting with a letter or digit.
  std::string name;
  std::string description;
  Source source = Source::Vcs;
  /// VCS: https://, http://, git://, ssh://, scp-like `user@host:path`, file:// or an absolute
  /// path. HTTP: http:// or https://. Local: an absolute path (or file://) to a file or directory.
  std::string uri;
  /// VCS only: branch, tag, full ref (`refs/...`) or full 40-hex commit; empty = remote HEAD.
  std::string ref;
  /// HTTP only: expected SHA-256 of the downloaded file (64 hex digits); empty = not checked.
  std::string sha256;
  /// Run with `/bin/sh -c` in the connector's root after fetching (optional).
  std::string install_command;
  /// Replaces the default update (VCS: fetch + checkout + install_command; HTTP/Local: fresh
  /// download/copy) when given: runs in a copy of the current version (c1's rule).
  std::string update_command;
  /// How to start the connector, run with `/bin/sh -c` from its root (`./s3`, `python ./x.py`).
  std::string command;
  /// Extra environment for the install/update commands and for the connector itself.
  std::map<std::string, std::string> env;
  /// Name of the secret holding credentials (token, username/password or SSH key) for the VCS
  /// remote or the HTTP download; resolved through Options::secrets, never logged.
  std::string secret_ref;
};

/// Checks every field: required ones present, source-specific fields only where they apply,
/// name safe as a directory name, URI scheme allowed for the source, sha256 format, env names.
/// Returns InvalidArgument with the field name in the message.
absl::Status validate(const ConnectorSpec& spec);

/// Parses one connector JSON object. c1 files are accepted as is; camelCase keys
/// (`installCommand`, `updateCommand`, `secretRef`) are accepted too; unknown keys are ignored.
/// The result is validated.
absl::StatusOr<ConnectorSpec> parseConnectorJson(std::string_view json);

/// Parses c1's `connectors.json` (an array of connector objects), or a single object.
absl::StatusOr<std::vector<ConnectorSpec>> parseConnectorListJson(std::string_view json);

/// Reads and parses a connector JSON file.
absl::StatusOr<ConnectorSpec> loadConnectorFile(const std::string& path);

/// The spec as c1-compatible JSON (snake_case keys; `ref`, `sha256`, `env`, `secret_ref` only when
/// set).
std::string toJson(const ConnectorSpec& spec);

/// 16 hex digits identifying what gets installed: source, uri, ref, sha256, install_command and
/// env. `name`, `description`, `command`, `update_command` and `secret_ref` do not change the
/// installed files and are left out, so editing them never forces a reinstall.
std::string specHash(const ConnectorSpec& spec);

/// `uri` with any `user:password@` part replaced by `***@`, for logs and error messages.
std::string redactUri(std::string_view uri);

}  // namespace tributary::installer
