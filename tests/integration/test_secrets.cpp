// The API key never leaves the process: not in logs, state, outputs, reports,
// sidecars, the spool, argv or the environment block; a key file others can
// read is refused.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>

#include "tests/integration/rig.h"

namespace {

const std::string kCanary = "canary-key-5b1d7e0c9a";

// Every file below `dir` whose bytes contain `needle`.
std::vector<std::string> files_containing(const std::string& dir, const std::string& needle) {
  std::vector<std::string> hits;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    if (test::read(it->path().string()).find(needle) != std::string::npos) hits.push_back(it->path().string());
  }
  return hits;
}

}  // namespace

TEST_CASE("a canary key appears nowhere: logs, state, outputs, spool, cmdline, environ") {
  Rig rig;
  rig.daemon = std::make_unique<test::Process>(
      std::vector<std::string>{WANBATCH_BIN, "--config", rig.config, "daemon", "--log-level", "debug"},
      std::map<std::string, std::string>{{"SEGMIND_API_KEY", kCanary}}, rig.root + "/daemon.log");
  rig.drop("secret.yaml", manifest("secret", 4));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("secret"); }), rig.log());
  std::string proc = "/proc/" + std::to_string(rig.daemon->pid());
  CHECK(test::read(proc + "/cmdline").find(kCanary) == std::string::npos);
  CHECK(test::read(proc + "/environ").find(kCanary) == std::string::npos);
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
  for (const char* dir : {"/state", "/out", "/spool"})
    CHECK_MESSAGE(files_containing(rig.root + dir, kCanary).empty(), dir);
  CHECK(rig.log().find(kCanary) == std::string::npos);
  CHECK(rig.log().find("submitted, request_id") != std::string::npos);  // the log did say things
}

TEST_CASE("a key file readable by others is refused at start, and a private one is used") {
  Rig rig;
  std::string key_file = rig.root + "/key";
  test::write(key_file, kCanary + "\n");
  ::chmod(key_file.c_str(), 0644);
  test::write(rig.config, test::read(rig.config) + "");
  std::string text = test::read(rig.config);
  text.replace(text.find("api:\n"), 5, "api:\n  key_file: " + key_file + "\n  key_env: WANBATCH_TEST_NO_SUCH_VAR\n");
  test::write(rig.config, text);
  std::string out;
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "daemon"}, &out) == 1);
  CHECK(out.find("readable or writable by others") != std::string::npos);
  ::chmod(key_file.c_str(), 0600);
  rig.start_daemon();
  rig.drop("kf.yaml", manifest("kf", 1));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("kf"); }), rig.log());
}

TEST_CASE("a systemd credential supplies the key") {
  Rig rig;
  test::mkdirs(rig.root + "/creds");
  test::write(rig.root + "/creds/segmind-api-key", kCanary);
  ::chmod((rig.root + "/creds/segmind-api-key").c_str(), 0400);
  std::string text = test::read(rig.config);
  text.replace(text.find("api:\n"), 5, "api:\n  key_env: WANBATCH_TEST_NO_SUCH_VAR\n");
  test::write(rig.config, text);
  rig.daemon = std::make_unique<test::Process>(
      std::vector<std::string>{WANBATCH_BIN, "--config", rig.config, "daemon"},
      std::map<std::string, std::string>{{"CREDENTIALS_DIRECTORY", rig.root + "/creds"}}, rig.root + "/daemon.log");
  rig.drop("cred.yaml", manifest("cred", 1));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("cred"); }), rig.log());
}
