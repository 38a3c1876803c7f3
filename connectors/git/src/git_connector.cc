#include "git_connector.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"
#include "tributary/connectors/options.h"
#include "tributary/connectors/pager.h"
#include "tributary/connectors/text.h"

#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <git2.h>
#include <memory>
#include <mutex>
#include <optional>
#include <stdlib.h>
#include <utility>
#include <vector>

namespace tributary::connectors::git {
namespace {

constexpr const char* kName = "git";
constexpr std::size_t kMaxListed = 10;

void ensureLibgit2() {
  static std::once_flag once;
  // Never shut down: a Sync on another thread may use libgit2 until the process exits.
  std::call_once(once, [] { git_libgit2_init(); });
}

std::string gitError() {
  const git_error* err = git_error_last();
  return (err != nullptr && err->message != nullptr) ? printable(err->message)
                                                     : std::string("unknown libgit2 error");
}

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using RepoPtr = std::unique_ptr<git_repository, Deleter<git_repository, git_repository_free>>;
using RemotePtr = std::unique_ptr<git_remote, Deleter<git_remote, git_remote_free>>;
using ObjectPtr = std::unique_ptr<git_object, Deleter<git_object, git_object_free>>;
using TreePtr = std::unique_ptr<git_tree, Deleter<git_tree, git_tree_free>>;
using EntryPtr = std::unique_ptr<git_tree_entry, Deleter<git_tree_entry, git_tree_entry_free>>;
using OdbPtr = std::unique_ptr<git_odb, Deleter<git_odb, git_odb_free>>;
using BlobPtr = std::unique_ptr<git_blob, Deleter<git_blob, git_blob_free>>;
using BranchIterPtr =
    std::unique_ptr<git_branch_iterator, Deleter<git_branch_iterator, git_branch_iterator_free>>;

std::string oidHex(const git_oid* oid) {
  char buf[GIT_OID_HEXSZ + 1];
  git_oid_tostr(buf, sizeof(buf), oid);
  return buf;
}

// A repository, and the temporary clone directory it lives in (removed with it) if any.
class Repository {
 public:
  Repository() = default;
  ~Repository() {
    repo_.reset();
    if (!temp_dir_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(temp_dir_, ignored);
    }
  }
  Repository(const Repository&) = delete;
  Repository& operator=(const Repository&) = delete;

  absl::Status open(const Options& options, sdk::Callback& callback);
  [[nodiscard]] git_repository* get() const { return repo_.get(); }

 private:
  absl::Status openLocal(const std::string& path);
  absl::Status clone(const std::string& url, sdk::Callback& callback);

  RepoPtr repo_;
  std::filesystem::path temp_dir_;
};

absl::Status Repository::open(const Options& options, sdk::Callback& callback) {
  ensureLibgit2();
  return isUrl(options.repository) ? clone(options.repository, callback)
                                   : openLocal(options.repository);
}

absl::Status Repository::openLocal(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(
          strings::cat(kName, ": repository \"", printable(path), "\" does not exist"));
    }
    return absl::PermissionDeniedError(strings::cat(kName, ": cannot access repository \"",
                                                    printable(path),
                                                    "\": ", strings::errnoMessage(err)));
  }
  git_repository* repo = nullptr;
  const int rc =
      git_repository_open_ext(&repo, path.c_str(), GIT_REPOSITORY_OPEN_NO_SEARCH, nullptr);
  if (rc == GIT_ENOTFOUND) {
    return absl::FailedPreconditionError(strings::cat(
        kName, ": \"", printable(path),
        "\" is not a git repository (for a directory inside a repository, give the "
        "repository's top-level directory and select the subdirectory with \"path\")"));
  }
  if (rc != 0) {
    return absl::FailedPreconditionError(
        strings::cat(kName, ": cannot open repository \"", printable(path), "\": ", gitError()));
  }
  repo_.reset(repo);
  return absl::OkStatus();
}

int transferProgress(const git_indexer_progress* /*stats*/, void* payload) {
  return static_cast<sdk::Callback*>(payload)->cancelled() ? -1 : 0;
}

absl::Status Repository::clone(const std::string& url, sdk::Callback& callback) {
  const std::string shown = repositoryUrl(url);
  const char* tmp = std::getenv("TMPDIR");
  std::string templ =
      strings::cat((tmp != nullptr && *tmp == '/') ? tmp : "/tmp", "/tributary-git-XXXXXX");
  if (::mkdtemp(templ.data()) == nullptr) {
    return absl::UnavailableError(strings::cat(
        kName, ": cannot create a temporary directory: ", strings::errnoMessage(errno)));
  }
  temp_dir_ = templ;
  git_repository* repo = nullptr;
  if (git_repository_init(&repo, templ.c_str(), /*is_bare=*/1) != 0) {
    return absl::UnavailableError(
        strings::cat(kName, ": cannot create a temporary repository: ", gitError()));
  }
  repo_.reset(repo);
  git_remote* raw_remote = nullptr;
  if (git_remote_create_with_fetchspec(&raw_remote, repo, "origin", url.c_str(),
                                       "+refs/heads/*:refs/heads/*") != 0) {
    return absl::InvalidArgumentError(
        strings::cat(kName, ": invalid repository URL \"", shown, "\": ", gitError()));
  }
  git_remote_free(raw_remote);
  if (git_remote_add_fetch(repo, "origin", "+refs/tags/*:refs/tags/*") != 0 ||
      git_remote_lookup(&raw_remote, repo, "origin") != 0) {
    return absl::InternalError(strings::cat(kName, ": cannot configure the remote: ", gitError()));
  }
  RemotePtr remote(raw_remote);
  git_fetch_options fetch = GIT_FETCH_OPTIONS_INIT;
  fetch.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;  // The tag refspec fetches all of them.
  fetch.callbacks.transfer_progress = transferProgress;
  fetch.callbacks.payload = &callback;
  sdk::log(sdk::LogLevel::Info, "cloning", {{"repository", shown}});
  if (git_remote_fetch(remote.get(), nullptr, &fetch, nullptr) != 0) {
    if (callback.cancelled()) {
      return absl::CancelledError(strings::cat(kName, ": the host cancelled the sync"));
    }
    return absl::UnavailableError(
        strings::cat(kName, ": cannot fetch \"", shown, "\": ", gitError()));
  }
  // HEAD of the clone = the remote's default branch, so that ref "HEAD" means what it means there.
  git_buf head = GIT_BUF_INIT;
  if (git_remote_default_branch(&head, remote.get()) == 0) {
    git_repository_set_head(repo, head.ptr);
  }
  git_buf_dispose(&head);
  return absl::OkStatus();
}

// "branches: main, dev; tags: v1.0" (at most kMaxListed of each), for an unknown-ref message.
std::string knownRefs(git_repository* repo) {
  std::vector<std::string> branches;
  git_branch_iterator* raw = nullptr;
  if (git_branch_iterator_new(&raw, repo, GIT_BRANCH_LOCAL) == 0) {
    BranchIterPtr it(raw);
    git_reference* ref = nullptr;
    git_branch_t type{};
    while (branches.size() <= kMaxListed && git_branch_next(&ref, &type, it.get()) == 0) {
      const char* name = nullptr;
      if (git_branch_name(&name, ref) == 0) {
        branches.emplace_back(printable(name));
      }
      git_reference_free(ref);
    }
  }
  std::vector<std::string> tags;
  git_strarray names{};
  if (git_tag_list(&names, repo) == 0) {
    for (std::size_t i = 0; i < names.count && tags.size() <= kMaxListed; ++i) {
      tags.emplace_back(printable(names.strings[i]));
    }
    git_strarray_dispose(&names);
  }
  const auto list = [](std::vector<std::string>& items) {
    if (items.empty()) {
      return std::string("none");
    }
    if (items.size() > kMaxListed) {
      items.resize(kMaxListed);
      items.emplace_back("…");
    }
    return strings::join(items, ", ");
  };
  return strings::cat("branches: ", list(branches), "; tags: ", list(tags));
}

std::string typeOf(git_filemode_t mode) {
  switch (mode) {
    case GIT_FILEMODE_BLOB:
      return "file";
    case GIT_FILEMODE_BLOB_EXECUTABLE:
      return "executable";
    case GIT_FILEMODE_LINK:
      return "symlink";
    case GIT_FILEMODE_COMMIT:
      return "submodule";
    case GIT_FILEMODE_TREE:
      return "tree";
    case GIT_FILEMODE_UNREADABLE:
      break;
  }
  return "unknown";
}

class Lister {
 public:
  Lister(const Options& options, git_repository* repo, Pager& pager, std::string commit)
      : options_(options),
        repo_(repo),
        pager_(pager),
        commit_(std::move(commit)),
        url_(repositoryUrl(options.repository)) {}

  absl::Status listTree(git_tree* tree, const std::string& prefix);
  absl::Status emit(const std::string& path, const git_tree_entry* entry);
  [[nodiscard]] nlohmann::json summary() const;

 private:
  static int walkCallback(const char* root, const git_tree_entry* entry, void* payload);

  const Options& options_;
  git_repository* repo_;
  Pager& pager_;
  std::string commit_;
  std::string url_;
  OdbPtr odb_;
  absl::Status walk_status_;
  std::string walk_prefix_;
  std::uint64_t visited_ = 0;
  std::uint64_t files_ = 0;
  std::uint64_t executables_ = 0;
  std::uint64_t symlinks_ = 0;
  std::uint64_t submodules_ = 0;
  std::uint64_t bytes_ = 0;
  std::uint64_t non_utf8_ = 0;
};

absl::Status Lister::emit(const std::string& path, const git_tree_entry* entry) {
  const git_filemode_t mode = git_tree_entry_filemode(entry);
  const git_oid* oid = git_tree_entry_id(entry);
  char mode_text[16];
  std::snprintf(mode_text, sizeof(mode_text), "%06o", static_cast<unsigned>(mode));
  nlohmann::json metadata = {{"mode", mode_text}, {"type", typeOf(mode)}};
  if (options_.commit_per_object) {
    metadata["commit"] = commit_;
  }
  if (mode == GIT_FILEMODE_COMMIT) {
    metadata["submodule_commit"] = oidHex(oid);
    ++submodules_;
  } else {
    metadata["blob"] = oidHex(oid);
    if (!odb_) {
      git_odb* odb = nullptr;
      if (git_repository_odb(&odb, repo_) != 0) {
        return absl::InternalError(
            strings::cat(kName, ": cannot open the object database: ", gitError()));
      }
      odb_.reset(odb);
    }
    std::size_t size = 0;
    git_object_t type{};
    if (git_odb_read_header(&size, &type, odb_.get(), oid) != 0) {
      return absl::DataLossError(strings::cat(kName, ": cannot read blob ", oidHex(oid), " of \"",
                                              printable(path), "\": ", gitError(),
                                              " (is the clone incomplete?)"));
    }
    metadata["size"] = static_cast<std::uint64_t>(size);
    bytes_ += size;
    if (mode == GIT_FILEMODE_LINK) {
      ++symlinks_;
      git_blob* raw = nullptr;
      if (git_blob_lookup(&raw, repo_, oid) == 0) {
        BlobPtr blob(raw);
        const std::string_view target(static_cast<const char*>(git_blob_rawcontent(blob.get())),
                                      static_cast<std::size_t>(git_blob_rawsize(blob.get())));
        metadata["target"] = isValidUtf8(target) ? std::string(target) : printable(target);
      }
    } else if (mode == GIT_FILEMODE_BLOB_EXECUTABLE) {
      ++executables_;
    } else {
      ++files_;
    }
  }
  proto::DataObject object;
  object.set_remote_id(path);
  object.set_resource_name(git_tree_entry_name(entry));
  object.set_uri(strings::cat(url_, "#", percentEncodeComponent(options_.ref), ":",
                              percentEncodeComponent(path)));
  object.set_metadata(metadata.dump());
  return pager_.add(std::move(object));
}

int Lister::walkCallback(const char* root, const git_tree_entry* entry, void* payload) {
  auto* self = static_cast<Lister*>(payload);
  const std::string name = git_tree_entry_name(entry);
  const std::string path = strings::cat(self->walk_prefix_, root, name);
  if (++self->visited_ % 256 == 0) {
    if (absl::Status status = self->pager_.checkCancelled(); !status.ok()) {
      self->walk_status_ = status;
      return -1;
    }
  }
  if (!isValidUtf8(name)) {
    if (self->options_.skip_non_utf8) {
      ++self->non_utf8_;
      sdk::log(sdk::LogLevel::Warn, "skipped a name that is not valid UTF-8",
               {{"path", printable(path)}});
      return 1;  // For a tree: do not descend.
    }
    self->walk_status_ = absl::FailedPreconditionError(strings::cat(
        kName, ": the path \"", printable(path),
        "\" is not valid UTF-8 (shown with \\xHH escapes); remote ids must be UTF-8. Select "
        "another \"path\" or set \"non_utf8_names\": \"skip\" to leave such names out"));
    return -1;
  }
  if (git_tree_entry_type(entry) == GIT_OBJECT_TREE) {
    return 0;  // Directories are not objects; descend.
  }
  if (absl::Status status = self->emit(path, entry); !status.ok()) {
    self->walk_status_ = status;
    return -1;
  }
  return 0;
}

absl::Status Lister::listTree(git_tree* tree, const std::string& prefix) {
  walk_prefix_ = prefix;
  const int rc = git_tree_walk(tree, GIT_TREEWALK_PRE, walkCallback, this);
  if (!walk_status_.ok()) {
    return walk_status_;
  }
  if (rc != 0) {
    return absl::DataLossError(
        strings::cat(kName, ": cannot read the tree of commit ", commit_, ": ", gitError()));
  }
  return absl::OkStatus();
}

nlohmann::json Lister::summary() const {
  return {{"repository", url_},      {"ref", options_.ref},
          {"commit", commit_},       {"path", options_.path},
          {"pages", pager_.pages()}, {"objects", pager_.objects()},
          {"files", files_},         {"executables", executables_},
          {"symlinks", symlinks_},   {"submodules", submodules_},
          {"bytes", bytes_},         {"skipped", {{"non_utf8_names", non_utf8_}}}};
}

absl::StatusOr<ObjectPtr> resolveCommit(git_repository* repo, const Options& options) {
  const std::string where = printable(repositoryUrl(options.repository));
  git_object* raw = nullptr;
  const int rc = git_revparse_single(&raw, repo, options.ref.c_str());
  if (rc != 0) {
    if (options.ref == "HEAD" && git_repository_head_unborn(repo) == 1) {
      return absl::FailedPreconditionError(strings::cat(
          kName, ": repository ", where, " has no commits yet (its HEAD branch is unborn)"));
    }
    if (rc == GIT_ENOTFOUND || rc == GIT_EINVALIDSPEC || rc == GIT_EAMBIGUOUS) {
      return absl::NotFoundError(strings::cat(
          kName, ": ref \"", printable(options.ref), "\" not found in ", where, " (", gitError(),
          "). Known ", knownRefs(repo),
          ". A ref is a branch, a tag, a full ref name, a commit id, or any git rev-parse "
          "expression"));
    }
    return absl::FailedPreconditionError(strings::cat(kName, ": cannot resolve ref \"",
                                                      printable(options.ref), "\" in ", where, ": ",
                                                      gitError()));
  }
  ObjectPtr object(raw);
  git_object* commit = nullptr;
  if (git_object_peel(&commit, object.get(), GIT_OBJECT_COMMIT) != 0) {
    return absl::InvalidArgumentError(
        strings::cat(kName, ": ref \"", printable(options.ref), "\" names a ",
                     git_object_type2string(git_object_type(object.get())),
                     ", not a commit (nor a tag of one)"));
  }
  return ObjectPtr(commit);
}

}  // namespace

bool isUrl(const std::string& repository) {
  if (repository.empty() || repository.front() == '/') {
    return false;
  }
  if (repository.find("://") != std::string::npos) {
    return true;
  }
  // scp-like "[user@]host:path": a ':' before any '/'.
  const auto colon = repository.find(':');
  return colon != std::string::npos && colon > 0 && repository.find('/') > colon;
}

std::string repositoryUrl(const std::string& repository) {
  if (!isUrl(repository)) {
    return fileUrl(repository);
  }
  const auto scheme = repository.find("://");
  if (scheme == std::string::npos) {
    return repository;
  }
  const auto authority_end = repository.find('/', scheme + 3);
  const auto at = repository.rfind('@', authority_end);
  if (at == std::string::npos || at < scheme) {
    return repository;
  }
  const std::string scheme_name = strings::toLower(repository.substr(0, scheme));
  if (scheme_name == "http" || scheme_name == "https") {
    // User info in an HTTP URL is a credential (often a token as the user name): drop it all.
    return strings::cat(repository.substr(0, scheme + 3), repository.substr(at + 1));
  }
  const auto colon = repository.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) {
    return repository;
  }
  return strings::cat(repository.substr(0, colon), repository.substr(at));  // Drop the password.
}

absl::StatusOr<Options> parseOptions(const std::string& text) {
  TRIBUTARY_ASSIGN_OR_RETURN(const OptionReader reader,
                             OptionReader::parse(kName, text,
                                                 {"repository", "ref", "path", "page_size",
                                                  "non_utf8_names", "commit_per_object"}));
  Options options;
  TRIBUTARY_ASSIGN_OR_RETURN(const auto repository, reader.string("repository"));
  if (!repository || repository->empty()) {
    return reader.error(
        "\"repository\" is required: an absolute path of a local repository or a URL "
        "(file://, https://, ssh://, git://), e.g. {\"repository\": \"/srv/git/project\"}");
  }
  if (!isUrl(*repository) && repository->front() != '/') {
    return reader.error(strings::cat("\"repository\" must be an absolute path or a URL, got \"",
                                     printable(*repository), "\""));
  }
  options.repository = *repository;
  TRIBUTARY_ASSIGN_OR_RETURN(const auto ref, reader.string("ref"));
  if (ref) {
    if (ref->empty()) {
      return reader.error("\"ref\" must not be empty (leave it out for HEAD)");
    }
    options.ref = *ref;
  }
  TRIBUTARY_ASSIGN_OR_RETURN(const auto path, reader.string("path"));
  if (path) {
    std::string p(*path);
    while (!p.empty() && p.front() == '/') {
      p.erase(0, 1);
    }
    while (!p.empty() && p.back() == '/') {
      p.pop_back();
    }
    for (const auto segment : strings::split(p, '/')) {
      if (!p.empty() && (segment.empty() || segment == "." || segment == "..")) {
        return reader.error(
            strings::cat("\"path\" must be a plain path inside the repository "
                         "(no empty, '.' or '..' segments), got \"",
                         printable(*path), "\""));
      }
    }
    options.path = p;
  }
  TRIBUTARY_ASSIGN_OR_RETURN(const auto page_size, reader.integer("page_size", 1, 100000));
  options.page_size = static_cast<std::size_t>(page_size.value_or(1000));
  TRIBUTARY_ASSIGN_OR_RETURN(const auto non_utf8,
                             reader.choice("non_utf8_names", {"fail", "skip"}));
  options.skip_non_utf8 = non_utf8.value_or("fail") == "skip";
  TRIBUTARY_ASSIGN_OR_RETURN(const auto per_object, reader.boolean("commit_per_object"));
  options.commit_per_object = per_object.value_or(false);
  return options;
}

absl::StatusOr<std::string> GitConnector::sync(const std::string& text, sdk::Callback& callback) {
  TRIBUTARY_ASSIGN_OR_RETURN(const Options options, parseOptions(text));
  const auto started = std::chrono::steady_clock::now();
  Repository repository;
  TRIBUTARY_RETURN_IF_ERROR(repository.open(options, callback));
  TRIBUTARY_ASSIGN_OR_RETURN(const ObjectPtr commit, resolveCommit(repository.get(), options));
  const std::string commit_id = oidHex(git_object_id(commit.get()));
  git_tree* raw_tree = nullptr;
  if (git_commit_tree(&raw_tree, reinterpret_cast<git_commit*>(commit.get())) != 0) {
    return absl::DataLossError(
        strings::cat(kName, ": cannot read the tree of commit ", commit_id, ": ", gitError()));
  }
  TreePtr tree(raw_tree);
  sdk::log(sdk::LogLevel::Info, "listing",
           {{"repository", repositoryUrl(options.repository)},
            {"ref", options.ref},
            {"commit", commit_id}});

  Pager pager(callback, options.page_size);
  Lister lister(options, repository.get(), pager, commit_id);
  if (options.path.empty()) {
    TRIBUTARY_RETURN_IF_ERROR(lister.listTree(tree.get(), ""));
  } else {
    git_tree_entry* raw_entry = nullptr;
    if (git_tree_entry_bypath(&raw_entry, tree.get(), options.path.c_str()) != 0) {
      return absl::NotFoundError(strings::cat(kName, ": path \"", printable(options.path),
                                              "\" does not exist at ref \"", printable(options.ref),
                                              "\" (commit ", commit_id, ")"));
    }
    EntryPtr entry(raw_entry);
    if (git_tree_entry_type(entry.get()) == GIT_OBJECT_TREE) {
      git_tree* sub = nullptr;
      if (git_tree_lookup(&sub, repository.get(), git_tree_entry_id(entry.get())) != 0) {
        return absl::DataLossError(strings::cat(kName, ": cannot read the tree \"",
                                                printable(options.path), "\": ", gitError()));
      }
      TreePtr subtree(sub);
      TRIBUTARY_RETURN_IF_ERROR(lister.listTree(subtree.get(), options.path + "/"));
    } else {
      TRIBUTARY_RETURN_IF_ERROR(lister.emit(options.path, entry.get()));
    }
  }
  TRIBUTARY_RETURN_IF_ERROR(pager.flush());
  nlohmann::json summary = lister.summary();
  summary["duration_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now() - started)
                               .count();
  sdk::log(sdk::LogLevel::Info, "listed",
           {{"commit", commit_id}, {"objects", std::to_string(pager.objects())}});
  return summary.dump();
}

}  // namespace tributary::connectors::git
