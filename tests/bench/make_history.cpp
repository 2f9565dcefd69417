// make_history: a state directory holding a long finished history, for
// scripts/bench-scale.sh ("a store with 100,000 finished shots starts as fast as an
// empty one"). Writes BATCHES finished batches of SHOTS DONE shots each through
// wb::Store, step by step as the daemon records them: the batch and its PENDING
// shots in one write, then per shot SUBMITTING with its ledger line `attempt`, the
// request_id with `accepted`, DONE with its cost, metrics and file; then the batch
// is marked finished. No video file is written (a start never reads them).
//
//   make_history STATE_DIR OUTPUT_ROOT SPOOL_ACTIVE [BATCHES [SHOTS]]   (1000, 100)
//
// STATE_DIR must exist and hold no store yet (STATE_DIR/db), so a real state is
// never added to. Synced writes cost what the disk makes them cost: on tmpfs
// 100,000 shots take seconds, on a disk at ~4 ms a sync about half an hour.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "jobs/store.h"
#include "jobs/util.h"

namespace {

int usage() {
  std::fprintf(stderr, "usage: make_history STATE_DIR OUTPUT_ROOT SPOOL_ACTIVE [BATCHES [SHOTS]]  (1000, 100)\n");
  return 2;
}

bool parse_count(const char* text, int max, int& out) {
  char* end = nullptr;
  long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < 1 || v > max) return false;
  out = static_cast<int>(v);
  return true;
}

nlohmann::json ledger_entry(const wb::Shot& s, const char* event, wb::TimePoint t) {
  return {{"time", wb::iso8601_utc(t)}, {"shot", s.key()}, {"event", event}, {"attempt", s.submit_attempts}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || argc > 6) return usage();
  const std::string state_dir = argv[1], output_root = argv[2], spool_active = argv[3];
  int batches = 1000, shots_per_batch = 100;
  if ((argc > 4 && !parse_count(argv[4], 100000, batches)) || (argc > 5 && !parse_count(argv[5], 100000, shots_per_batch)))
    return usage();
  for (const auto& dir : {state_dir, output_root, spool_active}) {
    if (dir.empty() || dir[0] != '/') {
      std::fprintf(stderr, "make_history: %s: must be an absolute path\n", dir.c_str());
      return 2;
    }
  }
  if (!wb::is_dir(state_dir)) {
    std::fprintf(stderr, "make_history: %s: not a folder\n", state_dir.c_str());
    return 2;
  }
  const std::string db = wb::join_path(state_dir, "db");
  if (::access(db.c_str(), F_OK) == 0) {
    std::fprintf(stderr, "make_history: %s already exists; give an empty state folder\n", db.c_str());
    return 2;
  }

  try {
    auto store = wb::Store::open(db, wb::Store::Mode::read_write);
    // Spread over the last 30 days, so the daily spend the daemon rebuilds at start
    // sees many days, as a long-running daemon's would.
    const auto now = std::chrono::system_clock::now();
    const auto span = std::chrono::hours(24 * 30);
    for (int b = 0; b < batches; ++b) {
      char name[32];
      std::snprintf(name, sizeof name, "hist%05d", b);
      auto t = now - span + span * b / batches;
      wb::BatchRecord rec;
      rec.name = name;
      rec.manifest_name = std::string(name) + ".yaml";
      rec.manifest_path = wb::join_path(spool_active, rec.name + "__" + rec.manifest_name);
      rec.sha256 = wb::sha256_hex(rec.name);
      rec.base_dir = spool_active;
      rec.created_ms = wb::to_epoch_ms(t);
      rec.shot_count = shots_per_batch;

      std::vector<wb::Shot> shots;
      for (int i = 0; i < shots_per_batch; ++i) {
        wb::Shot s;
        s.batch = rec.name;
        s.index = i;
        char id[16];
        std::snprintf(id, sizeof id, "s%04d", i);
        s.spec.id = id;
        s.spec.prompt = "history shot " + std::to_string(i) + ": a slow dolly past the lake at dawn";
        s.spec.image.url = "https://cdn.example/frames/" + s.spec.id + ".png";
        s.spec.duration = 5;
        s.spec.line = 3 + i;
        shots.push_back(std::move(s));
      }
      store->add_batch(rec, shots);

      for (auto& s : shots) {
        s.state = wb::ShotState::submitting;
        s.submit_attempts = 1;
        store->put_shot_and_ledger(s, ledger_entry(s, "attempt", t));
        s.state = wb::ShotState::in_flight;
        s.request_id = wb::sha256_hex(s.key()).substr(0, 32);
        s.submitted_ms = wb::to_epoch_ms(t);
        s.remote_status = "QUEUED";
        auto accepted = ledger_entry(s, "accepted", t);
        accepted["verdict"] = "ok";
        accepted["http_status"] = 200;
        accepted["request_id"] = s.request_id;
        store->put_shot_and_ledger(s, accepted);
        auto done_at = t + std::chrono::seconds(140);
        s.state = wb::ShotState::done;
        s.remote_status = "COMPLETED";
        s.completed_ms = wb::to_epoch_ms(done_at);
        s.output_url = "https://cdn.example/outputs/" + s.request_id + ".mp4";
        s.cost = 0.5;
        s.metrics_json = R"({"cost":0.5,"inference_time":138.0,"queue_time":1.2,"remaining_credits":1000.0,)"
                         R"("total_time":139.2})";
        s.file = wb::join_path(wb::join_path(output_root, rec.name), s.spec.id + ".mp4");
        store->put_shot(s, wb::Sync::yes);
      }
      rec.finished = true;
      rec.finished_ms = wb::to_epoch_ms(t + std::chrono::seconds(150));
      store->put_batch(rec);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_history: %s\n", e.what());
    return 1;
  }
  std::printf("%d finished batches of %d DONE shots in %s\n", batches, shots_per_batch, db.c_str());
  return 0;
}
