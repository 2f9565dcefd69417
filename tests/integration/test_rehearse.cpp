// `wanbatch rehearse` on the real binaries: it sends nothing to the API the
// config names (the simulator counts every request), writes nothing in the
// state or output folders, and takes what a running daemon has learned.
#include <doctest/doctest.h>

#include "jobs/curl_transport.h"
#include "tests/integration/rig.h"

namespace {

json stats(const std::string& base) {
  wb::CurlTransport t(true);
  wb::HttpRequest r;
  r.url = base + "/sim/stats";
  std::optional<wb::HttpResponse> out;
  t.start(r, [&](wb::HttpResponse resp) { out = std::move(resp); });
  for (int i = 0; i < 500 && !out; ++i) t.perform(wb::Millis(10), {});
  REQUIRE(out);
  return json::parse(out->body);
}

json rehearse(Rig& rig, const std::string& file, std::string* text = nullptr) {
  std::string out;
  int code = test::run({WANBATCH_BIN, "--config", rig.config, "rehearse", "--json", file}, &out,
                       {{"SEGMIND_API_KEY", "test-key"}});
  INFO(out);
  REQUIRE(code == 0);
  if (text) *text = out;
  return json::parse(out);
}

}  // namespace

TEST_CASE("rehearse sends no request and changes nothing, and with a daemon running takes its render times and balance") {
  Rig rig;
  std::string file = rig.root + "/media/r.yaml";
  test::write(file, "base_dir: " + rig.root + "/media\n" + manifest("r", 12));

  json r = rehearse(rig, file);
  CHECK(r["finished"] == true);
  CHECK(r["shots"] == 12);
  CHECK(r["requests"]["submit"] == 12);
  CHECK(r["balance"].is_null());  // no daemon to ask
  CHECK(r["learned_render_samples"] == 0);
  CHECK(stats(rig.base)["requests"] == 0);
  CHECK(test::read(rig.ledger).empty());
  CHECK(test::list(rig.root + "/state").empty());
  CHECK(test::list(rig.root + "/out").empty());

  // A daemon renders a batch and learns; a rehearsal meanwhile neither submits nor reads the API.
  rig.start_daemon();
  rig.drop("a.yaml", manifest("a", 4));
  REQUIRE(test::eventually([&] { return rig.finished("a"); }));
  json before = stats(rig.base);
  json again = rehearse(rig, file);
  json after = stats(rig.base);
  CHECK(after["submits_accepted"] == before["submits_accepted"]);
  CHECK(after["endpoints"]["submit"] == before["endpoints"]["submit"]);
  CHECK(after["endpoints"]["status"] == before["endpoints"]["status"]);  // the daemon has nothing in flight
  CHECK(again["balance"].is_number());
  CHECK(again["learned_render_samples"].get<int>() > 0);
  CHECK(rig.billed().size() == 4);
  CHECK_FALSE(test::exists(rig.root + "/out/r"));
}

TEST_CASE("rehearse predicts the uploads and balance reads the daemon makes: none for media it uploaded, none while it has a balance") {
  Rig rig;
  // One balance read in the whole test: at the daemon's start (results carry the balance after it).
  std::string config = test::read(rig.config);
  const std::string fast = "check_interval_seconds: 0.5";
  REQUIRE(config.find(fast) != std::string::npos);
  config.replace(config.find(fast), fast.size(), "check_interval_seconds: 3600");
  test::write(rig.config, config);
  rig.start_daemon();
  rig.drop("a.yaml", manifest("a", 4));  // uploads frames/f0.png and frames/f1.png
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("a"); }), rig.log());

  // Another batch with the same local images and a URL one, rehearsed with the daemon running.
  std::string file = rig.root + "/media/r.yaml";
  test::write(file, "base_dir: " + rig.root + "/media\n" + manifest("r", 6));
  json predicted = rehearse(rig, file);
  CHECK(predicted["balance"].is_number());
  CHECK(predicted["requests"].value("upload", 0) == 0);   // uploaded already: the store has their URLs
  CHECK(predicted["requests"].value("credits", 0) == 0);  // the daemon has a balance; its next read is an hour on

  // The daemon renders it: what it sends, the simulator counts.
  json before = stats(rig.base)["endpoints"];
  rig.drop("r.yaml", manifest("r", 6));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("r"); }), rig.log());
  json after = stats(rig.base)["endpoints"];
  for (const char* endpoint : {"upload", "credits", "submit", "result"}) {
    CAPTURE(endpoint);
    CHECK(after[endpoint].get<int>() - before[endpoint].get<int>() == predicted["requests"].value(endpoint, 0));
  }
  rig.daemon->signal(SIGTERM);
  rig.daemon->wait();
}
