#include "output_pump.h"

#include <gtest/gtest.h>

#include <unistd.h>

namespace tributary::plugin_host {
namespace {

TEST(StderrLine, ValidHclog) {
  const auto r = OutputPump::parseStderrLine(
      R"({"@level":"warn","@message":"hello","@timestamp":"2026-01-02T03:04:05.000000Z","@module":"m","k":1})");
  EXPECT_EQ(r.level, log::Level::Warn);
  EXPECT_EQ(r.message, "hello");
  EXPECT_EQ(r.fields["module"], "m");
  EXPECT_EQ(r.fields["k"], 1);
  EXPECT_EQ(r.fields["connector_ts"], "2026-01-02T03:04:05.000000Z");
}

TEST(StderrLine, NonStringFieldsNeverCrash) {
  // A Go host panics on these; we log them.
  const auto r = OutputPump::parseStderrLine(R"({"@level":7,"@message":123,"@timestamp":[]})");
  EXPECT_EQ(r.message, "123");
  EXPECT_EQ(r.level, log::Level::Info);
  const auto n = OutputPump::parseStderrLine(R"({"@message":null})");
  EXPECT_EQ(n.message, "null");
}

TEST(StderrLine, PlainTextAndBrokenJson) {
  EXPECT_EQ(OutputPump::parseStderrLine("{not json").message, "{not json");
  EXPECT_EQ(OutputPump::parseStderrLine("[1,2,3]").message, "[1,2,3]");
  EXPECT_EQ(OutputPump::parseStderrLine("[ERROR] boom").level, log::Level::Error);
  EXPECT_EQ(OutputPump::parseStderrLine("panic: nil map").level, log::Level::Error);
  EXPECT_EQ(OutputPump::parseStderrLine("just text").level, log::Level::Info);
  // Deep nesting must not overflow anything.
  const std::string deep = std::string(60000, '[') + std::string(60000, ']');
  EXPECT_EQ(OutputPump::parseStderrLine(deep).message.size(), deep.size());
}

class CollectingSink : public log::Sink {
 public:
  void write(const log::Record& record) override {
    const std::lock_guard lock(mu_);
    records.push_back(record);
  }
  std::mutex mu_;
  std::vector<log::Record> records;
};

TEST(StderrLine, HclogRenderedForMessages) {
  EXPECT_EQ(
      OutputPump::renderStderrLine(
          R"({"@level":"warn","@message":"slow","@module":"s3","@timestamp":"t","n":2,"why":"a b"})"),
      R"([WARN] s3: slow: n=2 why="a b")");
  EXPECT_EQ(OutputPump::renderStderrLine(R"({"@level":"error","@message":"x"})"), "[ERROR] x");
  EXPECT_EQ(OutputPump::renderStderrLine("plain text"), "plain text");
  EXPECT_EQ(OutputPump::renderStderrLine("{not json"), "{not json");
  // A traceback in a field is reduced to its exception and frame.
  EXPECT_EQ(
      OutputPump::renderStderrLine(
          R"({"@level":"error","@message":"boom","error":"Traceback (most recent call last):\n  File \"/c/x.py\", line 3, in f\n    g()\nValueError: bad"})"),
      R"x([ERROR] boom: error="ValueError: bad, at f (/c/x.py:3)")x");
}

// Feeds `text` through a pump's stderr and returns the pump, stopped.
std::unique_ptr<OutputPump> pumpStderr(const std::string& text) {
  int err[2];
  EXPECT_EQ(::pipe(err), 0);
  auto pump = std::make_unique<OutputPump>(
      -1, err[0], log::Logger("connector", std::make_shared<CollectingSink>()), 1000);
  EXPECT_EQ(::write(err[1], text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ::close(err[1]);
  pump->stop(std::chrono::seconds(5));
  return pump;
}

TEST(OutputPump, GoPanicNamesTheCauseAndTheConnectorsFrame) {
  auto pump =
      pumpStderr(R"({"@level":"warn","@message":"retrying","@module":"s3","@timestamp":"t"})"
                 "\n"
                 R"({"@level":"info","@message":"page sent","@timestamp":"t"})"
                 "\n"
                 "panic: runtime error: invalid memory address or nil pointer dereference\n"
                 "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x6f5b2a]\n"
                 "\n"
                 "goroutine 23 [running]:\n"
                 "panic({0x9e4c60?, 0xc00009c2a0?})\n"
                 "\t/usr/local/go/src/runtime/panic.go:792 +0x132\n"
                 "encoding/json.(*decodeState).object(0xc0001, {0x1, 0x2})\n"
                 "\t/usr/local/go/src/encoding/json/decode.go:600 +0x1d\n"
                 "example.com/s3conn/internal/list.(*Lister).Next(...)\n"
                 "\t/src/s3conn/internal/list/list.go:42\n"
                 "tributary.dev/sdk/go/connector.(*server).Sync(0xc000, {0x1})\n"
                 "\t/sdk/go/connector/plugin.go:80 +0x55\n"
                 "google.golang.org/grpc.(*Server).processUnaryRPC(0xc0002)\n"
                 "\t/go/pkg/mod/google.golang.org/grpc@v1.70.0/server.go:1400 +0x1000\n"
                 "created by google.golang.org/grpc.(*Server).serveStreams.func2 in goroutine 40\n"
                 "\t/go/pkg/mod/google.golang.org/grpc@v1.70.0/server.go:1029 +0x139\n");
  const auto crash = pump->crash();
  ASSERT_TRUE(crash.has_value());
  EXPECT_EQ(crash->cause,
            "panic: runtime error: invalid memory address or nil pointer dereference");
  EXPECT_EQ(
      crash->location,
      "example.com/s3conn/internal/list.(*Lister).Next (/src/s3conn/internal/list/list.go:42)");
  EXPECT_EQ(crash->warnings_before, std::vector<std::string>{"[WARN] s3: retrying"});
  // The tail holds the cause, not the frames, and no raw JSON.
  EXPECT_EQ(pump->stderrTail(),
            (std::vector<std::string>{"[WARN] s3: retrying", "[INFO] page sent",
                                      "panic: runtime error: invalid memory address or nil "
                                      "pointer dereference"}));
}

TEST(OutputPump, GoFatalErrorWithoutOwnFrameNamesTheFirstNonRuntimeFrame) {
  auto pump = pumpStderr(
      "fatal error: concurrent map writes\n\n"
      "goroutine 7 [running]:\n"
      "runtime.throw({0x1, 0x2})\n"
      "\t/usr/local/go/src/runtime/panic.go:1101 +0x48\n"
      "google.golang.org/grpc.(*Server).handleStream(0x1)\n"
      "\t/go/pkg/mod/google.golang.org/grpc@v1.70.0/server.go:1700 +0x1\n");
  const auto crash = pump->crash();
  ASSERT_TRUE(crash.has_value());
  EXPECT_EQ(crash->cause, "fatal error: concurrent map writes");
  EXPECT_EQ(crash->location,
            "google.golang.org/grpc.(*Server).handleStream "
            "(/go/pkg/mod/google.golang.org/grpc@v1.70.0/server.go:1700)");
}

TEST(OutputPump, PanicWordInALogLineIsNoCrash) {
  auto pump = pumpStderr("panic: not really, just a message\nnext line\n" +
                         std::string(R"({"@level":"info","@message":"fine"})") + "\n");
  EXPECT_FALSE(pump->crash().has_value());
  EXPECT_EQ(pump->stderrTail().back(), "[INFO] fine");
}

TEST(OutputPump, PythonTracebackNamesTheExceptionAndTheConnectorsFrame) {
  auto pump = pumpStderr(
      "[WARN] slow listing\n"
      "Traceback (most recent call last):\n"
      "  File \"/opt/conn/main.py\", line 40, in <module>\n"
      "    main()\n"
      "  File \"/opt/conn/main.py\", line 12, in list_bucket\n"
      "    client.list()\n"
      "  File \"/venv/lib/python3.11/site-packages/boto/x.py\", line 9, in list\n"
      "    raise ValueError('bad bucket')\n"
      "    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
      "ValueError: bad bucket\n");
  const auto crash = pump->crash();
  ASSERT_TRUE(crash.has_value());
  EXPECT_EQ(crash->cause, "ValueError: bad bucket");
  EXPECT_EQ(crash->location, "list_bucket (/opt/conn/main.py:12)");
  EXPECT_EQ(crash->warnings_before, std::vector<std::string>{"[WARN] slow listing"});
  EXPECT_EQ(pump->stderrTail(),
            (std::vector<std::string>{"[WARN] slow listing", "ValueError: bad bucket"}));
}

TEST(OutputPump, HandshakeThenDrainAndRateLimit) {
  int out[2];
  int err[2];
  ASSERT_EQ(::pipe(out), 0);
  ASSERT_EQ(::pipe(err), 0);
  auto sink = std::make_shared<CollectingSink>();
  OutputPump pump(out[0], err[0], log::Logger("connector", sink), 10);
  const std::string first = "1|1|unix|/tmp/x|grpc|\nextra output\n";
  ASSERT_EQ(::write(out[1], first.data(), first.size()), static_cast<ssize_t>(first.size()));
  auto line = pump.waitHandshake(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  ASSERT_TRUE(line.ok());
  EXPECT_EQ(*line, "1|1|unix|/tmp/x|grpc|");
  // Far more than a pipe buffer on both: the writer must never block for long.
  const std::string chunk(64 * 1024, 'z');
  for (int i = 0; i < 64; ++i) {
    ASSERT_EQ(::write(out[1], chunk.data(), chunk.size()), static_cast<ssize_t>(chunk.size()));
  }
  for (int i = 0; i < 100; ++i) {
    const std::string l = "line " + std::to_string(i) + "\n";
    ASSERT_EQ(::write(err[1], l.data(), l.size()), static_cast<ssize_t>(l.size()));
  }
  ::close(out[1]);
  ::close(err[1]);
  pump.stop(std::chrono::seconds(5));
  EXPECT_EQ(pump.discardedStdoutBytes(), 13U + 64U * 64U * 1024U);
  const std::lock_guard lock(sink->mu_);
  // 10 lines, one "suppressed" summary, one note about the discarded stdout.
  ASSERT_EQ(sink->records.size(), 12U);
  EXPECT_EQ(sink->records[9].message, "line 9");
  EXPECT_EQ(sink->records[10].fields["suppressed_lines"], 90);
  EXPECT_EQ(sink->records[11].fields["bytes"], 13U + 64U * 64U * 1024U);
  EXPECT_EQ(pump.stderrTail().back(), "line 99");
}

TEST(OutputPump, StdoutClosedBeforeHandshake) {
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  OutputPump pump(out[0], -1, log::Logger("connector", std::make_shared<CollectingSink>()), 10);
  ::close(out[1]);
  auto line = pump.waitHandshake(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  EXPECT_EQ(line.status().code(), absl::StatusCode::kUnavailable);
}

TEST(OutputPump, OverlongFirstLine) {
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  OutputPump pump(out[0], -1, log::Logger("connector", std::make_shared<CollectingSink>()), 10);
  std::thread writer([fd = out[1]] {
    const std::string chunk(100 * 1024, 'a');
    (void)::write(fd, chunk.data(), chunk.size());
    ::close(fd);
  });
  auto line = pump.waitHandshake(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  writer.join();
  EXPECT_EQ(line.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(OutputPump, StderrLongLineIsFragmented) {
  int err[2];
  ASSERT_EQ(::pipe(err), 0);
  auto sink = std::make_shared<CollectingSink>();
  OutputPump pump(-1, err[0], log::Logger("connector", sink), 1000);
  std::thread writer([fd = err[1]] {
    const std::string big = std::string(200 * 1024, 'q') + "\n";
    (void)::write(fd, big.data(), big.size());
    ::close(fd);
  });
  writer.join();
  pump.stop(std::chrono::seconds(5));
  const std::lock_guard lock(sink->mu_);
  ASSERT_EQ(sink->records.size(), 4U);  // 64 KiB × 3 + 8 KiB
  EXPECT_EQ(sink->records[0].message.size(), 64U * 1024U);
}

}  // namespace
}  // namespace tributary::plugin_host
