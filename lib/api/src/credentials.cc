#include "tributary/api/credentials.h"

#include "tributary/common/strings.h"

namespace tributary::api {
using strings::cat;

absl::StatusOr<Credentials> resolveCredentials(const Connector& connector,
                                               const SecretSource& secrets) {
  Credentials out;
  const std::string& ns = connector.ns;
  auto missing = [&](const std::string& path, const std::string& what, const std::string& places) {
    return absl::InvalidArgumentError(
        cat(connector.origin, ": ", path, ": ", what, " not found ", places,
            "; add it to one of these, or set `optional: true` if the connector can do without"));
  };
  // envFrom first, so that spec.env (plain or valueFrom) wins, as in a Pod.
  for (const EnvFromSecret& from : connector.env_from) {
    auto keys = secrets.all(ns, from.secret);
    if (!keys.ok()) {
      return absl::Status(keys.status().code(),
                          cat(connector.origin, ": ", from.path, ": ", keys.status().message()));
    }
    if (!keys->has_value()) {
      if (from.optional) {
        continue;
      }
      return missing(from.path, cat("secret `", from.secret, "`"),
                     secrets.placesForSecret(ns, from.secret));
    }
    std::vector<std::string> skipped;
    for (const auto& [key, value] : **keys) {
      const std::string name = from.prefix + key;
      if (!isEnvName(name)) {
        skipped.push_back(key);
        continue;
      }
      if (connector.spec.env.contains(name)) {
        continue;  // A plain spec.env value wins.
      }
      out.env[name] = value;
    }
    if (!skipped.empty()) {
      out.notes.push_back(cat(connector.origin, ": ", from.path, ": keys of secret `", from.secret,
                              "` that do not make environment variable names were skipped: ",
                              strings::join(skipped, ", ")));
    }
  }
  for (const SecretEnvVar& var : connector.secret_env) {
    auto value = secrets.key(ns, var.ref.name, var.ref.key);
    if (!value.ok()) {
      return absl::Status(value.status().code(),
                          cat(connector.origin, ": ", var.path, ": ", value.status().message()));
    }
    if (!value->has_value()) {
      out.env.erase(var.name);  // Unset, even if envFrom had it (spec.env wins).
      if (var.ref.optional) {
        continue;
      }
      return missing(var.path, cat("secret `", var.ref.name, "` key `", var.ref.key, "`"),
                     secrets.placesForKey(ns, var.ref.name, var.ref.key));
    }
    out.env[var.name] = **value;
  }
  for (const SecretFiles& files : connector.files) {
    for (std::size_t i = 0; i < files.items.size(); ++i) {
      const SecretFileItem& item = files.items[i];
      auto value = secrets.key(ns, files.secret, item.key);
      if (!value.ok()) {
        return absl::Status(value.status().code(), cat(connector.origin, ": ", files.path, ": ",
                                                       value.status().message()));
      }
      if (!value->has_value()) {
        if (files.optional) {
          continue;
        }
        return missing(cat(files.path, ".items[", i, "].key"),
                       cat("secret `", files.secret, "` key `", item.key, "`"),
                       secrets.placesForKey(ns, files.secret, item.key));
      }
      out.files.push_back(CredentialFile{item.path, **value, item.env});
    }
  }
  return out;
}

absl::StatusOr<std::string> resolveOptions(const SyncJob& job, const SecretSource& secrets) {
  if (!job.options_from) {
    return job.options_json.value_or("{}");
  }
  const SecretKeyRef& ref = *job.options_from;
  auto value = secrets.key(job.ns, ref.name, ref.key);
  if (!value.ok()) {
    return absl::Status(
        value.status().code(),
        cat(job.origin, ": spec.optionsFrom.secretKeyRef: ", value.status().message()));
  }
  if (!value->has_value()) {
    return absl::InvalidArgumentError(cat(job.origin, ": spec.optionsFrom.secretKeyRef: secret `",
                                          ref.name, "` key `", ref.key, "` not found ",
                                          secrets.placesForKey(job.ns, ref.name, ref.key)));
  }
  return **value;
}

}  // namespace tributary::api
