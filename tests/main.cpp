// doctest main: every test case runs in its own temporary folder (the working
// directory), removed when the case passes and kept, with its path printed,
// when it fails. The idea comes from ccache's unittest/main.cpp.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

namespace {

std::string g_dir;
std::string g_start_dir;

struct TempDirListener : doctest::IReporter {
  explicit TempDirListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override {
    char tmpl[] = "/tmp/wanbatch-test-XXXXXX";
    g_dir = ::mkdtemp(tmpl);
    if (::chdir(g_dir.c_str()) != 0) std::abort();
  }
  // Each subcase re-runs the test case from the top: give it a clean folder.
  void test_case_reenter(const doctest::TestCaseData&) override {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(g_dir, ec)) std::filesystem::remove_all(e.path(), ec);
  }
  void test_case_end(const doctest::CurrentTestCaseStats& stats) override {
    if (::chdir(g_start_dir.c_str()) != 0) std::abort();
    if (stats.testCaseSuccess) {
      std::error_code ec;
      std::filesystem::remove_all(g_dir, ec);
    } else {
      std::cerr << "test folder kept: " << g_dir << "\n";
    }
  }
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

REGISTER_LISTENER("tempdir", 1, TempDirListener);

int main(int argc, char** argv) {
  char cwd[4096];
  g_start_dir = ::getcwd(cwd, sizeof cwd) ? cwd : "/tmp";
  // Logs only when asked: WANBATCH_TEST_LOG=1.
  const char* log = std::getenv("WANBATCH_TEST_LOG");
  spdlog::set_level(log && *log == '1' ? spdlog::level::debug : spdlog::level::off);
  doctest::Context context(argc, argv);
  return context.run();
}
