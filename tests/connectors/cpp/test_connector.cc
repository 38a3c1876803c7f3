// The test connector of tests/connectors/README.md (the contract), written with the C++ SDK
// (label `cpp`). Behaviour is chosen with TEST_CONNECTOR_MODE and the Sync options.
#include "tributary/sdk/connector.h"

#include "absl/strings/str_cat.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

constexpr const char* kLabel = "cpp";
constexpr size_t kFloodBytes = 16U * 1024U * 1024U;

const std::set<std::string>& knownModes() {
  static const std::set<std::string> modes = {"normal",
                                              "exit_before_handshake",
                                              "text_before_handshake",
                                              "never_handshake",
                                              "crash_mid_sync",
                                              "hang_in_sync",
                                              "sync_error",
                                              "oversized_page",
                                              "flood_output",
                                              "bad_hclog",
                                              "upsert_after_return",
                                              "never_dial",
                                              "ignore_upsert_errors",
                                              "invalid_utf8",
                                              "clean"};
  return modes;
}

struct Options {
  int pages = 3;
  int page_size = 10;
  long object_bytes = 0;
  long oversize_bytes = 8388608;
  long revision = 0;  // When > 0, one object in a hundred (index % 100 == 0) carries "rev":R.
};

absl::StatusOr<Options> parseOptions(const std::string& text) {
  Options opts;
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    return opts;
  }
  const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError("options must be a JSON object");
  }
  const auto number = [&json](const char* key, long fallback) -> absl::StatusOr<long> {
    if (!json.contains(key)) {
      return fallback;
    }
    const auto& v = json.at(key);
    if (!v.is_number_integer()) {
      return absl::InvalidArgumentError(std::string("option ") + key + " must be an integer");
    }
    return v.get<long>();
  };
  auto pages = number("pages", opts.pages);
  auto page_size = number("page_size", opts.page_size);
  auto object_bytes = number("object_bytes", opts.object_bytes);
  auto oversize_bytes = number("oversize_bytes", opts.oversize_bytes);
  auto revision = number("revision", opts.revision);
  for (const auto* s : {&pages, &page_size, &object_bytes, &oversize_bytes, &revision}) {
    if (!s->ok()) {
      return s->status();
    }
  }
  opts.pages = static_cast<int>(*pages);
  opts.page_size = static_cast<int>(*page_size);
  opts.object_bytes = *object_bytes;
  opts.oversize_bytes = *oversize_bytes;
  opts.revision = *revision;
  return opts;
}

// {"page":P,"index":I[,"rev":R]} or, with pad >= 0, {…,"pad":"x…"}; P is quoted when it is not a
// number ("oversize"); "rev" only for revision > 0 and index % 100 == 0. Formatted by hand: it is
// the bulk of a benchmark connector's work.
std::string metadataJson(const std::string& page, int index, long pad, long revision = 0) {
  const bool numeric = page.find_first_not_of("0123456789") == std::string::npos;
  std::string meta = absl::StrCat(R"({"page":)", numeric ? "" : "\"", page, numeric ? "" : "\"",
                                  R"(,"index":)", index);
  if (revision > 0 && index % 100 == 0) {
    absl::StrAppend(&meta, R"(,"rev":)", revision);
  }
  if (pad >= 0) {
    absl::StrAppend(&meta, R"(,"pad":")", std::string(static_cast<size_t>(pad), 'x'), "\"");
  }
  meta += '}';
  return meta;
}

proto::DataObject buildObject(const std::string& page, int index, long pad, long revision = 0) {
  proto::DataObject object;
  object.set_remote_id(absl::StrCat("obj-", page, "-", index));
  object.set_resource_name(absl::StrCat("resource ", index));
  object.set_uri(absl::StrCat("test://", page, "/", index));
  object.set_metadata(metadataJson(page, index, pad, revision));
  return object;
}

long encodedSize(const proto::DataObject& object) {
  return static_cast<long>(object.ByteSizeLong());
}

// obj-<page>-<index>, padded so that the encoded DataObject is about `object_bytes`: the pad is
// sized from the unpadded object, then corrected once for the metadata's longer length prefix.
proto::DataObject makeObject(int page, int index, long object_bytes, long revision = 0) {
  const std::string p = std::to_string(page);
  proto::DataObject object = buildObject(p, index, -1, revision);
  if (object_bytes <= encodedSize(object)) {
    return object;
  }
  object.set_metadata(metadataJson(p, index, 0, revision));
  long pad = std::max(0L, object_bytes - encodedSize(object));
  object.set_metadata(metadataJson(p, index, pad, revision));
  pad = std::max(0L, pad - (encodedSize(object) - object_bytes));
  object.set_metadata(metadataJson(p, index, pad, revision));
  return object;
}

// `count` objects obj-oversize-<i> whose encoded page is about `total_bytes`.
proto::SyncResponse oversizedPage(long total_bytes, int count) {
  count = std::max(1, count);
  const auto build = [count](const std::vector<long>& pads) {
    proto::SyncResponse page;
    for (int i = 0; i < count; ++i) {
      *page.add_response() = buildObject("oversize", i, pads[static_cast<size_t>(i)]);
    }
    return page;
  };
  std::vector<long> pads(static_cast<size_t>(count), 0);
  const long base = static_cast<long>(build(pads).ByteSizeLong());
  const long each = std::max(0L, (total_bytes - base) / count);
  std::fill(pads.begin(), pads.end(), each);
  pads.back() =
      std::max(0L, pads.back() + (total_bytes - static_cast<long>(build(pads).ByteSizeLong())));
  return build(pads);
}

void writeFd(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      return;
    }
    off += static_cast<size_t>(n);
  }
}

void flood(int fd, size_t total, const std::string& tag) {
  const std::string line = "flood " + tag + " " + std::string(100, 'y') + "\n";
  std::string chunk;
  while (chunk.size() + line.size() <= 65536) {
    chunk += line;
  }
  size_t written = 0;
  while (written < total) {
    const size_t n = std::min(chunk.size(), total - written);
    writeFd(fd, chunk.substr(0, n));
    written += n;
  }
}

void badHclog() {
  writeFd(2, "{\"@level\":\"info\",\"@message\":123}\n");
  writeFd(2, "{\"@level\":7,\"@message\":null,\"@timestamp\":[]}\n");
  writeFd(2, "{not json\n");
  writeFd(2, "[1,2,3]\n");
  writeFd(2, std::string(1024 * 1024, 'z') + "\n");
  writeFd(2,
          "{\"@level\":\"warn\",\"@message\":\"valid hclog line\","
          "\"@timestamp\":\"2026-01-02T03:04:05.000000Z\",\"k\":\"v\"}\n");
}

[[noreturn]] void sleepForever() {
  for (;;) {
    std::this_thread::sleep_for(std::chrono::hours(1));
  }
}

// Background work that outlives a Sync call (mode upsert_after_return); joined by main().
std::mutex g_background_mu;
std::vector<std::thread> g_background;

class TestConnector final : public tributary::sdk::Connector {
 public:
  explicit TestConnector(std::string mode) : mode_(std::move(mode)) {}

  absl::StatusOr<std::string> sync(const std::string& options,
                                   tributary::sdk::Callback& callback) override {
    auto opts_or = parseOptions(options);
    if (!opts_or.ok()) {
      return opts_or.status();
    }
    const Options opts = *opts_or;
    if (mode_ == "sync_error") {
      return absl::UnknownError("upstream said no");
    }
    if (mode_ == "never_dial") {
      return metadata(0, 0);
    }
    if (mode_ == "flood_output") {
      flood(1, kFloodBytes, "stdout");
      flood(2, kFloodBytes, "stderr");
    }
    if (mode_ == "bad_hclog") {
      badHclog();
    }

    int pages = 0;
    long objects = 0;
    const auto send = [&](const proto::SyncResponse& page) -> absl::Status {
      if (absl::Status status = callback.upsert(page); !status.ok()) {
        if (mode_ == "ignore_upsert_errors") {
          return absl::OkStatus();  // c1's S3 connector: the page is silently lost.
        }
        return absl::Status(status.code(), "upsert failed: " + status.ToString());
      }
      ++pages;
      objects += page.response_size();
      return absl::OkStatus();
    };

    if (mode_ == "invalid_utf8") {
      // Protobuf C++ logs about the invalid UTF-8 but serializes the bytes as they are.
      proto::SyncResponse page;
      proto::DataObject* object = page.add_response();
      *object = makeObject(0, 0, 0);
      object->set_uri(std::string("\xff\xfe", 2));
      if (absl::Status status = send(page); !status.ok()) {
        return status;
      }
      return metadata(pages, objects);
    }

    if (mode_ == "oversized_page") {
      if (absl::Status status = send(oversizedPage(opts.oversize_bytes, opts.page_size));
          !status.ok()) {
        return status;
      }
    }

    for (int p = 0; p < opts.pages; ++p) {
      proto::SyncResponse page;
      for (int i = 0; i < opts.page_size; ++i) {
        *page.add_response() = makeObject(p, i, opts.object_bytes, opts.revision);
      }
      if (absl::Status status = send(page); !status.ok()) {
        return status;
      }
      if (pages == 1 && mode_ == "crash_mid_sync") {
        std::_Exit(2);
      }
      if (pages == 1 && mode_ == "hang_in_sync") {
        sleepForever();
      }
    }

    if (mode_ == "clean") {
      if (absl::Status status = callback.clean(); !status.ok()) {
        return absl::Status(status.code(), "clean failed: " + status.ToString());
      }
    }

    if (mode_ == "upsert_after_return") {
      std::shared_ptr<tributary::sdk::Callback> late = callback.share();
      std::vector<proto::DataObject> late_page = {makeObject(opts.pages, 0, 0)};
      const std::lock_guard lock(g_background_mu);
      g_background.emplace_back([late, late_page] {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        // Expected to fail: the host no longer serves this callback. The error is ignored.
        (void)late->upsert(late_page);
      });
    }
    return metadata(pages, objects);
  }

 private:
  static std::string metadata(int pages, long objects) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    meta["pages"] = pages;
    meta["objects"] = objects;
    meta["connector"] = kLabel;
    return meta.dump();
  }

  const std::string mode_;
};

}  // namespace

int main() {
  const char* env = std::getenv("TEST_CONNECTOR_MODE");
  const std::string mode = (env != nullptr && *env != '\0') ? env : "normal";
  if (knownModes().count(mode) == 0) {
    writeFd(2, "test connector: unsupported TEST_CONNECTOR_MODE '" + mode + "' (cpp)\n");
    return 64;
  }
  if (mode == "exit_before_handshake") {
    writeFd(2, "test connector: exiting before handshake\n");
    return 3;
  }
  if (mode == "never_handshake") {
    sleepForever();
  }
  if (mode == "text_before_handshake") {
    writeFd(1, "hello from the connector\n");
  }
  TestConnector connector(mode);
  const int code = tributary::sdk::serve(connector);
  std::vector<std::thread> background;
  {
    const std::lock_guard lock(g_background_mu);
    background.swap(g_background);
  }
  for (auto& t : background) {
    t.join();
  }
  return code;
}
