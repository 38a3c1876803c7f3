#include "vcs.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"
#include "tributary/installer/spec.h"

#include "known_hosts.h"

#include <git2.h>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace tributary::installer::internal {
namespace {

namespace fs = std::filesystem;

void ensureLibgit2() {
  static std::once_flag once;
  // Never shut down: other threads may use libgit2 until the process exits.
  std::call_once(once, [] { git_libgit2_init(); });
}

struct RepoDeleter {
  void operator()(git_repository* r) const { git_repository_free(r); }
};
struct RemoteDeleter {
  void operator()(git_remote* r) const { git_remote_free(r); }
};
struct ObjectDeleter {
  void operator()(git_object* o) const { git_object_free(o); }
};
using RepoPtr = std::unique_ptr<git_repository, RepoDeleter>;
using RemotePtr = std::unique_ptr<git_remote, RemoteDeleter>;
using ObjectPtr = std::unique_ptr<git_object, ObjectDeleter>;

// State shared with libgit2's callbacks during one operation.
struct CallbackState {
  const Credentials* credentials = nullptr;
  Deadline deadline = Deadline::none();
  std::stop_token stop;
  int userpass_attempts = 0;
  int ssh_attempts = 0;
  int username_attempts = 0;
  bool timed_out = false;
  bool cancelled = false;
  bool auth_failed = false;
  bool no_credentials = false;
  int ssh_port = 22;                               // for known_hosts' `[host]:port`
  absl::Status host_key_error = absl::OkStatus();  // why the SSH host key was refused

  int check() {
    if (stop.stop_requested()) {
      cancelled = true;
      return GIT_EUSER;
    }
    if (deadline.expired()) {
      timed_out = true;
      return GIT_EUSER;
    }
    return 0;
  }
};

// libgit2 asks again after a refusal, and again per connection: a few tries per kind, then a
// clear "authentication failed" instead of a loop.
constexpr int kMaxAttempts = 3;

int credentialCallback(git_credential** out, const char* /*url*/, const char* username_from_url,
                       unsigned int allowed, void* payload) {
  auto* state = static_cast<CallbackState*>(payload);
  if (const int rc = state->check(); rc != 0) {
    return rc;
  }
  const Credentials* creds = state->credentials;
  if (creds == nullptr || creds->empty()) {
    state->no_credentials = true;
    return GIT_EAUTH;
  }
  const std::string url_user = username_from_url != nullptr ? username_from_url : "";
  if ((allowed & GIT_CREDENTIAL_USERNAME) != 0U && state->username_attempts++ < kMaxAttempts) {
    const std::string user =
        !creds->username.empty() ? creds->username : (!url_user.empty() ? url_user : "git");
    return git_credential_username_new(out, user.c_str());
  }
  if ((allowed & (GIT_CREDENTIAL_SSH_KEY | GIT_CREDENTIAL_SSH_MEMORY)) != 0U &&
      !creds->ssh_private_key.empty() && state->ssh_attempts++ < kMaxAttempts) {
    const std::string user =
        !url_user.empty() ? url_user : (!creds->username.empty() ? creds->username : "git");
    return git_credential_ssh_key_memory_new(
        out, user.c_str(), creds->ssh_public_key.empty() ? nullptr : creds->ssh_public_key.c_str(),
        creds->ssh_private_key.c_str(),
        creds->ssh_passphrase.empty() ? nullptr : creds->ssh_passphrase.c_str());
  }
  if ((allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT) != 0U &&
      (!creds->token.empty() || !creds->password.empty()) &&
      state->userpass_attempts++ < kMaxAttempts) {
    const std::string user = !creds->username.empty()
                                 ? creds->username
                                 : (!url_user.empty() ? url_user : std::string("x-access-token"));
    const std::string& secret = !creds->token.empty() ? creds->token : creds->password;
    return git_credential_userpass_plaintext_new(out, user.c_str(), secret.c_str());
  }
  // Either our attempts were refused, or the secret has nothing usable.
  state->auth_failed = true;
  return GIT_EAUTH;
}

// SSH host keys are checked against the secret's known_hosts. libgit2 1.5.1 (CVE-2023-22742 fix)
// would otherwise only consult $HOME/.ssh/known_hosts; its verdict (`valid`) is ignored so that
// the secret is the one source of trust. TLS certificates keep libgit2's own validation.
int certificateCallback(git_cert* cert, int /*valid*/, const char* host, void* payload) {
  auto* state = static_cast<CallbackState*>(payload);
  if (cert == nullptr || cert->cert_type != GIT_CERT_HOSTKEY_LIBSSH2) {
    return GIT_PASSTHROUGH;
  }
  const Credentials* creds = state->credentials;
  if (creds != nullptr && creds->insecure_skip_host_key_verification) {
    return 0;  // The installer logged a warning.
  }
  const auto* key = reinterpret_cast<const git_cert_hostkey*>(cert);
  OfferedHostKey offered;
  if ((key->type & GIT_CERT_SSH_RAW) != 0 && key->hostkey != nullptr && key->hostkey_len > 0) {
    offered.blob.assign(key->hostkey, key->hostkey_len);
  } else if ((key->type & GIT_CERT_SSH_SHA256) != 0) {
    offered.sha256.assign(reinterpret_cast<const char*>(key->hash_sha256),
                          sizeof(key->hash_sha256));
  }
  const std::string host_name = host != nullptr ? host : "";
  if (creds == nullptr || creds->known_hosts.empty()) {
    const std::string fp =
        offered.blob.empty()
            ? (offered.sha256.empty() ? std::string("unknown") : sshFingerprint(offered.sha256))
            : sshFingerprint(sha256Raw(offered.blob));
    state->host_key_error = absl::FailedPreconditionError(strings::cat(
        "cannot verify the SSH host key of ", knownHostsName(host_name, state->ssh_port),
        " (it offered ", keyTypeOfBlob(offered.blob), offered.blob.empty() ? "" : " ", fp,
        "): add a `known_hosts` key to the connector's secret (secret_ref) with the server's "
        "host keys, e.g. from `ssh-keyscan`"));
    return GIT_EUSER;
  }
  state->host_key_error = verifyHostKey(creds->known_hosts, host_name, state->ssh_port, offered);
  return state->host_key_error.ok() ? 0 : GIT_EUSER;
}

int progressCallback(const git_indexer_progress* /*stats*/, void* payload) {
  return static_cast<CallbackState*>(payload)->check();
}

int sidebandCallback(const char* /*str*/, int /*len*/, void* payload) {
  return static_cast<CallbackState*>(payload)->check();
}

git_remote_callbacks makeCallbacks(CallbackState& state) {
  git_remote_callbacks callbacks = GIT_REMOTE_CALLBACKS_INIT;
  callbacks.credentials = credentialCallback;
  callbacks.certificate_check = certificateCallback;
  callbacks.transfer_progress = progressCallback;
  callbacks.sideband_progress = sidebandCallback;
  callbacks.payload = &state;
  return callbacks;
}

// Turns the last libgit2 error into a Status.
absl::Status gitError(int rc, std::string_view what, const VcsSpec& spec,
                      const CallbackState* state = nullptr) {
  const git_error* err = git_error_last();
  std::string detail = err != nullptr && err->message != nullptr ? err->message : "unknown error";
  const int klass = err != nullptr ? err->klass : 0;
  const std::string url = redactUri(spec.url);
  // libgit2 may quote the URL; never echo credentials embedded in it.
  if (const auto pos = detail.find(spec.url); pos != std::string::npos && url != spec.url) {
    detail.replace(pos, spec.url.size(), url);
  }
  if (state != nullptr) {
    if (!state->host_key_error.ok()) {
      return absl::Status(state->host_key_error.code(),
                          strings::cat(what, " ", url, ": ", state->host_key_error.message()));
    }
    if (state->timed_out) {
      return absl::DeadlineExceededError(strings::cat(what, " ", url, ": timed out"));
    }
    if (state->cancelled) {
      return absl::CancelledError(strings::cat(what, " ", url, ": cancelled"));
    }
    if (state->no_credentials) {
      return absl::PermissionDeniedError(
          strings::cat(what, " ", url,
                       ": the remote requires authentication and no credentials were given "
                       "(set secret_ref)"));
    }
    if (state->auth_failed || rc == GIT_EAUTH) {
      std::string hint;
      if (state->credentials != nullptr &&
          sshKeyType(state->credentials->ssh_private_key, state->credentials->ssh_public_key) ==
              "ssh-rsa" &&
          parseSshUrl(spec.url, nullptr, nullptr)) {
        hint =
            " (libssh2 1.10 signs with RSA keys only as ssh-rsa/SHA-1, which OpenSSH 8.8+ servers "
            "refuse by default: use an ed25519 or ECDSA key)";
      }
      return absl::PermissionDeniedError(
          strings::cat(what, " ", url, ": authentication failed with the given credentials", hint));
    }
  }
  const std::string message = strings::cat(what, " ", url, ": ", detail);
  if (rc == GIT_EAUTH) {
    return absl::PermissionDeniedError(message);
  }
  if (rc == GIT_ENOTFOUND || detail.find("No such file or directory") != std::string::npos ||
      detail.find("could not find repository") != std::string::npos) {
    return absl::NotFoundError(message);
  }
  if (rc == GIT_ECERTIFICATE) {
    return absl::UnavailableError(message);
  }
  if (klass == GIT_ERROR_NET || klass == GIT_ERROR_SSL || klass == GIT_ERROR_SSH ||
      klass == GIT_ERROR_HTTP || klass == GIT_ERROR_OS) {
    if (detail.find("401") != std::string::npos || detail.find("403") != std::string::npos) {
      return absl::PermissionDeniedError(message);
    }
    if (detail.find("404") != std::string::npos) {
      return absl::NotFoundError(message);
    }
    return absl::UnavailableError(message);
  }
  if (klass == GIT_ERROR_REPOSITORY || klass == GIT_ERROR_REFERENCE) {
    return absl::NotFoundError(message);
  }
  return absl::UnavailableError(message);
}

std::string oidHex(const git_oid& oid) {
  char buf[GIT_OID_HEXSZ + 1] = {};
  git_oid_tostr(buf, sizeof(buf), &oid);
  return buf;
}

bool isFullCommitId(std::string_view ref) { return ref.size() == 40 && isHex(ref); }

struct Advertised {
  std::string name;
  std::string oid;     // what the ref points at
  std::string peeled;  // for annotated tags: the commit ("^{}" entry)
  std::string symref_target;
};

struct RemoteListing {
  std::vector<Advertised> refs;
  std::string default_branch;  // from HEAD's symref, when advertised
  std::string head_oid;
};

absl::StatusOr<RemoteListing> listRemote(git_remote* remote, const VcsSpec& spec,
                                         CallbackState& state) {
  git_remote_connect_options options = GIT_REMOTE_CONNECT_OPTIONS_INIT;
  options.callbacks = makeCallbacks(state);
  options.follow_redirects = GIT_REMOTE_REDIRECT_INITIAL;
  if (const int rc = git_remote_connect_ext(remote, GIT_DIRECTION_FETCH, &options); rc != 0) {
    return gitError(rc, "cannot reach", spec, &state);
  }
  const git_remote_head** heads = nullptr;
  size_t count = 0;
  if (const int rc = git_remote_ls(&heads, &count, remote); rc != 0) {
    absl::Status status = gitError(rc, "cannot list refs of", spec, &state);
    git_remote_disconnect(remote);
    return status;
  }
  RemoteListing listing;
  for (size_t i = 0; i < count; ++i) {
    const std::string name = heads[i]->name;
    const std::string oid = oidHex(heads[i]->oid);
    if (name == "HEAD") {
      listing.head_oid = oid;
      if (heads[i]->symref_target != nullptr) {
        listing.default_branch = heads[i]->symref_target;
      }
      continue;
    }
    constexpr std::string_view kPeeled = "^{}";
    if (name.size() > kPeeled.size() && name.substr(name.size() - kPeeled.size()) == kPeeled) {
      const std::string base = name.substr(0, name.size() - kPeeled.size());
      for (auto& r : listing.refs) {
        if (r.name == base) {
          r.peeled = oid;
        }
      }
      continue;
    }
    listing.refs.push_back({name, oid, "", ""});
  }
  if (listing.default_branch.empty()) {
    git_buf buf = GIT_BUF_INIT;
    if (git_remote_default_branch(&buf, remote) == 0 && buf.ptr != nullptr) {
      listing.default_branch = buf.ptr;
    }
    git_buf_dispose(&buf);
  }
  git_remote_disconnect(remote);
  return listing;
}

struct Target {
  std::vector<std::string> refspecs;
  std::string local_ref;  // what to peel after fetching; empty when `commit` is set
  std::string commit;     // expected commit (for a commit id)
  std::string resolved_ref;
  std::string remote_commit;  // what the remote advertises for the ref (peeled)
};

absl::StatusOr<Target> chooseTarget(const RemoteListing& listing, const VcsSpec& spec) {
  auto find = [&](std::string_view name) -> const Advertised* {
    for (const auto& r : listing.refs) {
      if (r.name == name) {
        return &r;
      }
    }
    return nullptr;
  };
  auto for_ref = [](const Advertised& r) {
    Target t;
    std::string dst;
    if (r.name.rfind("refs/heads/", 0) == 0) {
      dst = strings::cat("refs/remotes/origin/", r.name.substr(11));
    } else if (r.name.rfind("refs/tags/", 0) == 0) {
      dst = r.name;
    } else {
      dst = strings::cat("refs/tributary/", r.name.substr(r.name.find('/') + 1));
    }
    t.refspecs = {strings::cat("+", r.name, ":", dst)};
    t.local_ref = dst;
    t.resolved_ref = r.name;
    t.remote_commit = r.peeled.empty() ? r.oid : r.peeled;
    return t;
  };
  const std::string& ref = spec.ref;
  if (ref.empty()) {
    if (!listing.default_branch.empty()) {
      if (const Advertised* r = find(listing.default_branch); r != nullptr) {
        return for_ref(*r);
      }
    }
    // No symref advertised: a branch at HEAD's commit, preferring main and master.
    const Advertised* best = nullptr;
    for (const auto& r : listing.refs) {
      if (r.oid == listing.head_oid && r.name.rfind("refs/heads/", 0) == 0) {
        if (best == nullptr || r.name == "refs/heads/main" || r.name == "refs/heads/master") {
          best = &r;
        }
      }
    }
    if (best != nullptr) {
      return for_ref(*best);
    }
    if (listing.refs.empty() && listing.head_oid.empty()) {
      return absl::NotFoundError(
          strings::cat("the repository at ", redactUri(spec.url), " is empty (no commits)"));
    }
    return absl::NotFoundError(
        strings::cat("the remote ", redactUri(spec.url), " has no HEAD branch; set 'ref'"));
  }
  if (isFullCommitId(ref)) {
    Target t;
    t.commit = strings::toLower(ref);
    t.remote_commit = t.commit;
    for (const auto& r : listing.refs) {
      if (r.oid == t.commit || r.peeled == t.commit) {
        Target tip = for_ref(r);
        tip.commit = t.commit;
        tip.resolved_ref.clear();
        return tip;
      }
    }
    t.refspecs = {"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"};
    return t;
  }
  std::vector<std::string> candidates;
  if (ref.rfind("refs/", 0) == 0) {
    candidates.push_back(ref);
  } else {
    candidates.push_back(strings::cat("refs/heads/", ref));
    candidates.push_back(strings::cat("refs/tags/", ref));
  }
  for (const auto& name : candidates) {
    if (const Advertised* r = find(name); r != nullptr) {
      return for_ref(*r);
    }
  }
  std::string hint;
  if (ref.size() >= 4 && ref.size() < 40 && isHex(ref)) {
    hint = " (abbreviated commit ids are not accepted: use the full 40-character id)";
  }
  return absl::NotFoundError(strings::cat("unknown ref '", ref, "' in ", redactUri(spec.url),
                                          ": no branch or tag of that name", hint));
}

absl::StatusOr<RemotePtr> originRemote(git_repository* repo, const VcsSpec& spec) {
  git_remote* raw = nullptr;
  int rc = git_remote_lookup(&raw, repo, "origin");
  if (rc == GIT_ENOTFOUND) {
    rc = git_remote_create(&raw, repo, "origin", spec.url.c_str());
  } else if (rc == 0 && spec.url != git_remote_url(raw)) {
    git_remote_free(raw);
    raw = nullptr;
    rc = git_remote_set_url(repo, "origin", spec.url.c_str());
    if (rc == 0) {
      rc = git_remote_lookup(&raw, repo, "origin");
    }
  }
  if (rc != 0) {
    return gitError(rc, "cannot set up remote", spec);
  }
  return RemotePtr(raw);
}

}  // namespace

absl::StatusOr<VcsRevision> resolveRemote(const VcsSpec& spec, const std::stop_token& stop) {
  ensureLibgit2();
  git_remote* raw = nullptr;
  if (const int rc = git_remote_create_detached(&raw, spec.url.c_str()); rc != 0) {
    return gitError(rc, "invalid remote", spec);
  }
  RemotePtr remote(raw);
  CallbackState state{spec.credentials, spec.deadline, stop};
  parseSshUrl(spec.url, nullptr, &state.ssh_port);
  TRIBUTARY_ASSIGN_OR_RETURN(const RemoteListing listing, listRemote(remote.get(), spec, state));
  TRIBUTARY_ASSIGN_OR_RETURN(const Target target, chooseTarget(listing, spec));
  return VcsRevision{target.remote_commit, target.resolved_ref};
}

absl::StatusOr<VcsRevision> fetchAndCheckout(const VcsSpec& spec, const fs::path& workdir,
                                             const std::stop_token& stop) {
  ensureLibgit2();
  git_repository* raw_repo = nullptr;
  std::error_code ec;
  int rc = fs::exists(workdir / ".git", ec)
               ? git_repository_open(&raw_repo, workdir.c_str())
               : git_repository_init(&raw_repo, workdir.c_str(), /*is_bare=*/0);
  if (rc != 0) {
    return gitError(rc, "cannot create a repository for", spec);
  }
  RepoPtr repo(raw_repo);
  TRIBUTARY_ASSIGN_OR_RETURN(RemotePtr remote, originRemote(repo.get(), spec));

  CallbackState state{spec.credentials, spec.deadline, stop};
  parseSshUrl(spec.url, nullptr, &state.ssh_port);
  TRIBUTARY_ASSIGN_OR_RETURN(const RemoteListing listing, listRemote(remote.get(), spec, state));
  TRIBUTARY_ASSIGN_OR_RETURN(const Target target, chooseTarget(listing, spec));
  // The fetch is a new connection: it may need the credentials again.
  state.userpass_attempts = state.ssh_attempts = state.username_attempts = 0;

  std::vector<char*> specs;
  for (const auto& s : target.refspecs) {
    specs.push_back(const_cast<char*>(s.c_str()));
  }
  git_strarray refspecs{specs.data(), specs.size()};
  git_fetch_options fetch = GIT_FETCH_OPTIONS_INIT;
  fetch.callbacks = makeCallbacks(state);
  fetch.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
  fetch.follow_redirects = GIT_REMOTE_REDIRECT_INITIAL;
  fetch.update_fetchhead = 1;
  if ((rc = git_remote_fetch(remote.get(), &refspecs, &fetch, "tributary: fetch")) != 0) {
    return gitError(rc, "cannot fetch from", spec, &state);
  }

  git_object* raw_obj = nullptr;
  if (!target.local_ref.empty()) {
    rc = git_revparse_single(&raw_obj, repo.get(),
                             strings::cat(target.local_ref, "^{commit}").c_str());
    if (rc != 0) {
      return gitError(rc, strings::cat("fetched ref ", target.local_ref, " is not a commit in"),
                      spec);
    }
  } else {
    git_oid oid;
    if (git_oid_fromstr(&oid, target.commit.c_str()) != 0 ||
        git_object_lookup(&raw_obj, repo.get(), &oid, GIT_OBJECT_COMMIT) != 0) {
      return absl::NotFoundError(strings::cat("unknown ref '", spec.ref,
                                              "': commit not found on any branch or tag of ",
                                              redactUri(spec.url)));
    }
  }
  ObjectPtr commit(raw_obj);
  const std::string commit_id = oidHex(*git_object_id(commit.get()));
  if (!target.commit.empty() && commit_id != target.commit) {
    return absl::NotFoundError(
        strings::cat("unknown ref '", spec.ref, "' in ", redactUri(spec.url)));
  }
  git_checkout_options checkout = GIT_CHECKOUT_OPTIONS_INIT;
  checkout.checkout_strategy = GIT_CHECKOUT_FORCE;
  if ((rc = git_checkout_tree(repo.get(), commit.get(), &checkout)) != 0) {
    return gitError(rc, strings::cat("cannot check out ", commit_id, " from"), spec);
  }
  if ((rc = git_repository_set_head_detached(repo.get(), git_object_id(commit.get()))) != 0) {
    return gitError(rc, strings::cat("cannot set HEAD to ", commit_id, " for"), spec);
  }
  return VcsRevision{commit_id, target.resolved_ref};
}

absl::StatusOr<std::string> headCommit(const fs::path& workdir) {
  ensureLibgit2();
  git_repository* raw_repo = nullptr;
  const VcsSpec none{workdir.string(), "", nullptr, Deadline::none()};
  if (const int rc = git_repository_open(&raw_repo, workdir.c_str()); rc != 0) {
    return gitError(rc, "not a git checkout:", none);
  }
  RepoPtr repo(raw_repo);
  git_object* raw_obj = nullptr;
  if (const int rc = git_revparse_single(&raw_obj, repo.get(), "HEAD^{commit}"); rc != 0) {
    return gitError(rc, "cannot read HEAD of", none);
  }
  ObjectPtr commit(raw_obj);
  return oidHex(*git_object_id(commit.get()));
}

}  // namespace tributary::installer::internal
