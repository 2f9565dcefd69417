// Logging into the journal (daemon/journal_log.h) without a journald: the sink
// takes its send function, and the test reads the fields it was given.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <vector>

#include "daemon/journal_log.h"
#include "jobs/log_context.h"
#include "tests/unit/scheduler_rig.h"

using namespace wb;

namespace {

using Entry = std::map<std::string, std::string>;

struct Journal {
  std::vector<Entry> entries;
  int answer = 0;  // what the send returns
  std::shared_ptr<spdlog::logger> logger() {
    auto sink = std::make_shared<JournalSink>([this](const struct iovec* iov, int n) {
      Entry e;
      for (int i = 0; i < n; ++i) {
        std::string field(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
        auto eq = field.find('=');
        REQUIRE(eq != std::string::npos);
        REQUIRE(!e.count(field.substr(0, eq)));  // each field once
        e[field.substr(0, eq)] = field.substr(eq + 1);
      }
      entries.push_back(e);
      return answer;
    });
    auto l = std::make_shared<spdlog::logger>("journal-test", sink);
    l->set_level(spdlog::level::debug);
    return l;
  }
};

}  // namespace

TEST_CASE("journal: a line carries PRIORITY, the identifier, and BATCH, SHOT, REQUEST_ID from its scope") {
  Journal j;
  auto log = j.logger();
  {
    LogScope scope("lakeside-night/sh010", "req-42");
    log->warn("{}: HELD: {}", "lakeside-night/sh010", "ambiguous submit");
  }
  REQUIRE(j.entries.size() == 1);
  const Entry& e = j.entries[0];
  CHECK(e.at("MESSAGE") == "lakeside-night/sh010: HELD: ambiguous submit");  // no timestamp, no level of ours
  CHECK(e.at("PRIORITY") == "4");
  CHECK(e.at("SYSLOG_IDENTIFIER") == "wanbatch");
  CHECK(e.at("BATCH") == "lakeside-night");
  CHECK(e.at("SHOT") == "sh010");
  CHECK(e.at("REQUEST_ID") == "req-42");
}

TEST_CASE("journal: scopes nest, a batch scope has no SHOT, and outside every scope there are no fields") {
  Journal j;
  auto log = j.logger();
  {
    LogScope outer("b1");
    log->info("batch b1: finished");
    {
      LogScope inner("b1/s2");
      log->error("b1/s2: broke");
    }
    log->debug("again the batch");
  }
  log->info("daemon-wide");
  REQUIRE(j.entries.size() == 4);
  CHECK(j.entries[0].at("BATCH") == "b1");
  CHECK(!j.entries[0].count("SHOT"));
  CHECK(!j.entries[0].count("REQUEST_ID"));
  CHECK(j.entries[0].at("PRIORITY") == "6");
  CHECK(j.entries[1].at("SHOT") == "s2");
  CHECK(j.entries[1].at("PRIORITY") == "3");
  CHECK(j.entries[2].at("BATCH") == "b1");
  CHECK(!j.entries[2].count("SHOT"));
  CHECK(j.entries[2].at("PRIORITY") == "7");
  CHECK(!j.entries[3].count("BATCH"));
  CHECK(!j.entries[3].count("SHOT"));
}

TEST_CASE("journal: a multi-line message is one entry, whole") {
  Journal j;
  j.logger()->warn("m.yaml: refused:\nm.yaml:3: shots: empty\n");
  REQUIRE(j.entries.size() == 1);
  CHECK(j.entries[0].at("MESSAGE") == "m.yaml: refused:\nm.yaml:3: shots: empty\n");
}

TEST_CASE("journal: JOURNAL_STREAM must name the very file on the descriptor") {
  int fd = ::open("stream", O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  int other = ::open("other", O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  REQUIRE(other >= 0);
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  std::string mine = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  CHECK(is_journal_stream(mine.c_str(), fd));
  CHECK_FALSE(is_journal_stream(mine.c_str(), other));  // stderr redirected since systemd started us
  CHECK_FALSE(is_journal_stream(nullptr, fd));
  CHECK_FALSE(is_journal_stream("", fd));
  CHECK_FALSE(is_journal_stream((mine + "x").c_str(), fd));
  CHECK_FALSE(is_journal_stream(std::to_string(st.st_ino).c_str(), fd));
  CHECK_FALSE(is_journal_stream(mine.c_str(), 12345));  // not open
  ::close(fd);
  ::close(other);
}

TEST_CASE("journal: a line the journal refuses goes to stderr instead, without a timestamp") {
  Journal j;
  j.answer = -111;  // -ECONNREFUSED: no journald behind the socket
  auto log = j.logger();
  int saved = ::dup(STDERR_FILENO);
  int file = ::open("stderr.txt", O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  REQUIRE(saved >= 0);
  REQUIRE(file >= 0);
  ::dup2(file, STDERR_FILENO);
  {
    LogScope scope("b/s1");
    log->warn("b/s1: retry later");
  }
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::close(file);
  CHECK(j.entries.size() == 1);  // it was offered to the journal first
  CHECK(test::read("stderr.txt") == "warning b/s1: retry later\n");
}

TEST_CASE("journal: the engine's own lines carry their shot: submitted with its request_id, HELD, batch finished") {
  Journal j;
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(j.logger());
  struct Restore {
    std::shared_ptr<spdlog::logger> logger;
    ~Restore() { spdlog::set_default_logger(logger); }
  } restore{previous};
  test::SchedulerRig rig;
  rig.start();
  rig.accept("batch: night\nshots:\n  - {id: s1, prompt: a, image: 'https://cdn.example/a.png'}\n"
             "  - {id: s2, prompt: b, image: 'https://cdn.example/a.png'}\n");
  rig.tick();
  auto first = rig.net.take("/v2/wan2.7-i2v");
  test::FakeTransport::reply(first, 200, R"({"request_id":"req-1"})");
  rig.tick();
  auto second = rig.net.take("/v2/wan2.7-i2v");
  test::FakeTransport::fail(second, NetError::unknown_outcome);  // ambiguous: HELD
  auto find = [&](const std::string& text) -> const Entry* {
    for (const auto& e : j.entries)
      if (e.at("MESSAGE").find(text) != std::string::npos) return &e;
    return nullptr;
  };
  const Entry* submitted = find("night/s1: submitted");
  REQUIRE(submitted);
  CHECK(submitted->at("BATCH") == "night");
  CHECK(submitted->at("SHOT") == "s1");
  CHECK(submitted->at("REQUEST_ID") == "req-1");
  const Entry* held = find("night/s2: HELD");
  REQUIRE(held);
  CHECK(held->at("BATCH") == "night");
  CHECK(held->at("SHOT") == "s2");
  CHECK(held->at("PRIORITY") == "4");
  CHECK(!held->count("REQUEST_ID"));  // it never got one
}
