// Implementation notes.
// - The rehearsal is the daemon's loop with the outside replaced: the clock is
//   a counter moved from one due time to the next (what tick() returns), the
//   transport is RehearsalProvider, answered after each tick, the store and
//   the output folder are a temporary folder ($TMPDIR when set, else /dev/shm
//   when there is one: the engine's synced writes cost nothing there). So a 100-shot batch plays
//   in well under a second, and nothing real is read for writing.
// - Where the batch waits: after each tick, the daemon-wide submit wait and the
//   reasons of the pending shots ("waiting: ..."), each held until the next
//   step, summed by kind.
// - The decode check of each downloaded video runs ffprobe once: every video of
//   a rehearsal is the same sample, and the same bytes decode the same way.
#include "daemon/rehearse.h"

#include <signal.h>
#include <sys/statvfs.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <sstream>

#include "daemon/commands.h"
#include "daemon/control.h"
#include "daemon/rehearsal_provider.h"
#include "jobs/crash_point.h"
#include "jobs/credits.h"
#include "jobs/engine/scheduler.h"
#include "jobs/json_safe.h"
#include "jobs/manifest.h"
#include "jobs/revision.h"
#include "jobs/store.h"
#include "jobs/throttle.h"

namespace wb {

namespace {

using nlohmann::json;

// A private folder, removed with everything in it at the end: in $TMPDIR when it
// is set (and only there: a folder someone chose is not second-guessed), else
// on /dev/shm, else /tmp.
class TempDir {
 public:
  TempDir() {
    const char* tmpdir = std::getenv("TMPDIR");
    if (tmpdir && *tmpdir) {
      if (!make(tmpdir))
        throw Error(std::string("rehearse: cannot make a temporary folder in $TMPDIR (") + tmpdir +
                    "): " + std::strerror(errno));
      return;
    }
    for (const char* base : {"/dev/shm", "/tmp"})
      if (::access(base, W_OK) == 0 && make(base)) return;
    throw Error("rehearse: cannot make a temporary folder (TMPDIR is not set; /dev/shm, /tmp)");
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  bool make(const std::string& base) {
    std::string templ = base + "/wanbatch-rehearsal-" + std::to_string(::getpid()) + "-XXXXXX";
    if (!::mkdtemp(templ.data())) return false;
    path_ = templ;
    return true;
  }
  std::string path_;
};

// The room the rehearsal needs in its temporary folder, about: the state
// store's files (its log, memtable flushes) and, per shot, its sample video,
// sidecar and records. RocksDB aborts the process on a full disk in the middle
// of a write, so a folder without this room is refused before the store opens.
uint64_t room_needed(int shots) { return (8ull << 20) + static_cast<uint64_t>(std::max(shots, 0)) * (16ull << 10); }

void check_room(const std::string& dir, int shots) {
  struct statvfs v {};
  if (::statvfs(dir.c_str(), &v) != 0) return;  // unknown: the store says what goes wrong
  const uint64_t free = static_cast<uint64_t>(v.f_bavail) * v.f_frsize, need = room_needed(shots);
  if (free >= need) return;
  auto kb = [](uint64_t n) { return std::to_string((n + 1023) / 1024) + " KB"; };
  throw Error("rehearse: its temporary folder " + dir + " has " + kb(free) + " free, and a rehearsal of " +
              std::to_string(shots) + " shots needs about " + kb(need) +
              " (its state store and videos): set TMPDIR to a folder with room; nothing was sent or spent");
}

// Keeps spdlog quiet while the rehearsal's engine runs: its log is not news.
struct QuietLogs {
  spdlog::level::level_enum was = spdlog::get_level();
  QuietLogs() { spdlog::set_level(spdlog::level::off); }
  ~QuietLogs() { spdlog::set_level(was); }
};

// The start: the next local HH:MM from `now`, or now.
TimePoint start_at(const std::string& at, TimePoint now) {
  if (at.empty()) return now;
  if (std::string problem = rehearse_at_problem(at); !problem.empty()) throw Error("rehearse: " + problem);
  const int h = (at[0] - '0') * 10 + (at[1] - '0'), m = (at[3] - '0') * 10 + (at[4] - '0');
  time_t t = std::chrono::system_clock::to_time_t(now);
  struct tm local {};
  ::localtime_r(&t, &local);
  local.tm_hour = h;
  local.tm_min = m;
  local.tm_sec = 0;
  local.tm_isdst = -1;
  TimePoint at_today = std::chrono::system_clock::from_time_t(::mktime(&local));
  if (at_today >= now) return at_today;
  local.tm_mday += 1;
  local.tm_isdst = -1;
  return std::chrono::system_clock::from_time_t(::mktime(&local));
}

std::string wait_kind(const std::string& reason) {
  auto has = [&](const char* s) { return reason.find(s) != std::string::npos; };
  if (has("submit window")) return "window";
  if (has("request budget")) return "requests";
  if (has("budget")) return "budget";
  if (has("credit")) return "credits";
  if (has("submit rate") || has("rate limit") || has("429")) return "rate";
  if (has("in-flight cap")) return "in_flight";
  if (has("at the provider")) return "provider_queue";
  if (has("paused")) return "paused";
  return "other";
}

std::string local_text(int64_t epoch_ms) {
  time_t t = static_cast<time_t>(epoch_ms / 1000);
  struct tm local {};
  ::localtime_r(&t, &local);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", &local);
  return buf;
}

std::string duration_text(double seconds) {
  long s = std::lround(seconds);
  std::ostringstream o;
  if (s >= 3600) o << s / 3600 << "h" << std::setw(2) << std::setfill('0') << (s % 3600) / 60 << "m";
  else if (s >= 60) o << s / 60 << "m" << std::setw(2) << std::setfill('0') << s % 60 << "s";
  else o << s << "s";
  return o.str();
}

// SIGINT and SIGTERM while a rehearsal runs: noted, and the rehearsal stops
// at its next step, its temporary folder removed on the way out.
volatile sig_atomic_t g_signal = 0;
extern "C" void note_signal(int sig) { g_signal = sig; }

class SignalGuard {
 public:
  SignalGuard() {
    g_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = note_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalGuard() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;
  static void check() {
    if (g_signal) throw RehearsalInterrupted(g_signal);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

}  // namespace

namespace {
// A batch the real store has, copied into the rehearsal's store so that the
// manifest is played as its revision. Shots on the provider now count as
// finished as they are (their money is spent; the rehearsal cannot follow
// them): a changed one renders its next take, as after the real take.
RehearsalRevision copy_known_batch(Store& store, BatchRecord b, std::vector<Shot> shots) {
  bool open = false;
  for (auto& s : shots) {
    if (!is_terminal(s.state) && s.state != ShotState::pending) {
      s.state = ShotState::done;
      s.next_take.clear();
    }
    if (s.state == ShotState::pending) {
      s.due_ms = 0;
      open = true;
    }
  }
  b.finished = !open;
  store.add_batch(b, shots);
  RehearsalRevision r;
  r.batch = b.name;
  r.revision = b.revision;
  return r;
}
}  // namespace

std::string rehearse_at_problem(const std::string& at) {
  auto digit = [&](size_t i) { return at[i] >= '0' && at[i] <= '9'; };
  const bool shape = at.size() == 5 && digit(0) && digit(1) && at[2] == ':' && digit(3) && digit(4);
  if (shape && (at[0] - '0') * 10 + (at[1] - '0') <= 23 && at[3] <= '5') return "";
  return "--at must be HH:MM (local time, 00:00..23:59), not '" + at + "'";
}

RehearsalInterrupted::RehearsalInterrupted(int sig)
    : Error(std::string("rehearse: interrupted by ") + (sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal") +
            "; nothing was sent or spent, its temporary folder is removed"),
      signal(sig) {}

RehearsalResult rehearse(const Config& config, const std::vector<std::string>& files, const RehearseOptions& options) {
  const auto wall_started = std::chrono::steady_clock::now();
  std::vector<std::pair<std::string, Manifest>> manifests;
  for (const auto& f : files) {
    ManifestResult r = load_manifest(f, manifest_rules(config));
    if (!r.manifest) throw Error(format_problems(f, r.problems));
    manifests.emplace_back(f, std::move(*r.manifest));
  }
  RehearsalResult out;
  out.start_ms = to_epoch_ms(start_at(options.at, std::chrono::system_clock::now()));

  // What the daemon has learned: render times and costs, read-only.
  // No store yet (no daemon has run with this state_dir): the priors.
  std::string render_json, cost_json;
  std::vector<std::pair<BatchRecord, std::vector<Shot>>> known;  // the manifests' batches the store has
  std::map<std::string, std::string> assets;  // SHA-256 -> URL: the manifests' local media the daemon uploaded
  const std::string db = join_path(config.state_dir, "db");
  if (::access(join_path(db, "CURRENT").c_str(), F_OK) == 0) {
    auto real = Store::open(db, Store::Mode::read_only);
    render_json = real->meta("render_model").value_or("");
    cost_json = real->meta("cost_model").value_or("");
    for (const auto& [file, m] : manifests)
      if (auto b = real->batch(m.batch)) known.emplace_back(*b, real->shots(m.batch));
    // The daemon uploads a file once per content (a/<sha256>): one it has uploaded
    // is not uploaded again, in the rehearsal either.
    for (const auto& [file, m] : manifests)
      for (const auto& spec : m.shots)
        for (const auto& [field, print] : fingerprint_inputs(spec))
          if (print.rfind("sha256:", 0) == 0)
            if (auto url = real->asset_url(print.substr(7))) assets[print.substr(7)] = *url;
  }
  RenderModel model = RenderModel::from_json(parse_json_bounded(render_json).value_or(json()));
  model.set_prior_seconds(config.poll.prior_render_seconds);
  const json classes = model.to_json().value("classes", json::object());
  for (const auto& [cls, samples] : classes.items()) out.learned_samples += static_cast<int>(samples.size());
  CostModel costs(config.pricing);
  if (!cost_json.empty()) costs.load(cost_json);

  out.balance = options.balance;
  std::optional<double> next_read_s;  // the daemon's next balance read, seconds from now
  if (!out.balance && options.ask_daemon) {
    try {
      auto ping = control_request(config.state_dir, {{"command", "ping"}});
      if (auto b = ping.find("balance"); b != ping.end() && b->is_number()) out.balance = b->get<double>();
      if (auto n = ping.find("next_balance_read_seconds"); n != ping.end() && n->is_number() && out.balance)
        next_read_s = std::max(0.0, n->get<double>());
    } catch (const Error&) {
      // No daemon: the balance is unknown, and not a limit in the rehearsal.
    }
  }

  QuietLogs quiet;
  SignalGuard signals;  // before the folder exists: a signal from here on removes it
  TempDir tmp;
  {
    int shots = 0;
    for (const auto& [file, m] : manifests) shots += static_cast<int>(m.shots.size());
    for (const auto& [b, stored] : known) shots += static_cast<int>(stored.size());
    check_room(tmp.path(), shots);
  }
  Config settings = config;
  settings.output_root = join_path(tmp.path(), "output");
  settings.state_dir = join_path(tmp.path(), "state");
  settings.frames_dir = join_path(settings.state_dir, "frames");  // a chain's frames stay in the folder too
  settings.video.ffmpeg = "";  // no poster frames: there is no contact sheet to show them (chains: below)
  std::filesystem::create_directories(settings.output_root);
  std::filesystem::create_directories(settings.state_dir);
  auto store = Store::open(join_path(settings.state_dir, "db"), Store::Mode::read_write);
  if (!render_json.empty()) store->put_meta("render_model", render_json);
  if (!cost_json.empty()) store->put_meta("cost_model", cost_json);
  for (const auto& [sha, url] : assets) store->put_asset(sha, url);
  for (const auto& [b, shots] : known) out.revisions.push_back(copy_known_batch(*store, b, shots));

  int64_t sim_ms = 0;
  const TimePoint wall0 = from_epoch_ms(out.start_ms);
  const MonoPoint mono0 = MonoPoint(std::chrono::seconds(1000));
  RehearsalProvider provider(model, costs, out.balance, [&sim_ms] { return sim_ms; });
  Scheduler sched(settings, *store, provider, [&] { return wall0 + Millis(sim_ms); },
                  [&] { return mono0 + Millis(sim_ms); }, "rehearsal", false);
  std::map<std::string, VideoFacts> probed;  // by the video's SHA-256
  sched.set_video_probe([&probed](const VideoConfig& config, const VideoFile& video) {
    std::string sha = video.fd >= 0 ? sha256_fd_hex(video.fd) : sha256_hex(read_file(video.path));
    auto it = probed.find(sha);
    if (it == probed.end()) it = probed.emplace(sha, probe_video(config, video)).first;
    return it->second;
  });
  // Shot chains render as in the daemon: the child's frame is a stand-in PNG (no
  // ffmpeg here), one per parent's take and frame word, uploaded as the daemon
  // uploads the real one.
  sched.set_frame_extract([](const VideoConfig&, const std::string& video, const std::string& word,
                             const std::string& png) {
    try {
      write_file_atomic(dirname_of(png), basename_of(png), std::string("\x89PNG\r\n\x1a\n") + "rehearsal stand-in for the " + word + " frame of " +
                                 video + " " + sha256_hex(read_file(video)),
                        Durability::flush_only);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  });
  std::set<std::string> finished;  // batches of the manifests that ended
  sched.on_batch_finished = [&](const BatchRecord& b) {
    finished.insert(b.name);
    out.finish_ms = std::max<int64_t>(out.finish_ms, b.finished_ms ? b.finished_ms : to_epoch_ms(wall0) + sim_ms);
  };
  sched.events().subscribe([&](const Event& e) {
    if (e.kind == Event::Kind::request_made) {
      if (e.endpoint == "download") ++out.downloads;
      else ++out.requests[e.endpoint];
    } else if (e.kind == Event::Kind::shot_changed && e.from == ShotState::submitting && !out.first_submit_ms) {
      out.first_submit_ms = to_epoch_ms(wall0) + sim_ms;
    }
  });
  sched.load();
  // A balance the running daemon has read: it reads none for this batch when it
  // starts it, and its next read is when the daemon said (one interval after
  // another while no result carries the balance, up to a later --at); with none
  // known, a daemon started for it reads one first, and so does the rehearsal.
  if (out.balance) {
    std::optional<Millis> next_in;
    if (next_read_s) {
      const double every = std::max(0.1, config.credits.check_interval_seconds);
      const double late = static_cast<double>(out.start_ms - to_epoch_ms(std::chrono::system_clock::now())) / 1000.0;
      double at = *next_read_s - std::max(0.0, late);
      if (at < 0) at = std::fmod(std::fmod(at, every) + every, every);
      next_in = Millis(static_cast<int64_t>(at * 1000.0));
    }
    sched.set_balance_read(*out.balance, next_in);
  }
  std::set<std::string> names;
  for (const auto& [file, m] : manifests) {
    out.shots += static_cast<int>(m.shots.size());
    if (!names.insert(m.batch).second) throw Error(file + ": batch " + m.batch + " is named twice in this rehearsal");
    // A batch the store has: the manifest is its next revision, decided as the
    // daemon and `wanbatch plan` decide (jobs/revision.h), by the same accept.
    for (auto& rev : out.revisions)
      if (rev.batch == m.batch) {
        std::map<std::string, Inputs> inputs;
        for (const auto& spec : m.shots) inputs[spec.id] = fingerprint_inputs(spec);
        const auto before = store->batch(m.batch);
        RevisionPlan plan = plan_revision(store->shots(m.batch), m, inputs, before && before->sha256 == m.sha256);
        rev.renders = plan.renders();
        rev.no_op = plan.changes_nothing();
        rev.revision = rev.no_op ? before->revision : before->revision + 1;
        rev.shots = static_cast<int>(m.shots.size());
      }
    sched.accept(m, basename_of(file), file);
    // Nothing to do (a no-op revision of a finished batch): it is finished as it is.
    if (auto b = store->batch(m.batch); b && b->finished && finished.insert(m.batch).second)
      out.finish_ms = std::max(out.finish_ms, out.start_ms);
  }

  std::map<std::string, size_t> wait_at;  // kind -> index in out.waits
  const int64_t limit_ms = static_cast<int64_t>(options.max_simulated_days * 86400000.0);
  for (long turns = 0; finished.size() < manifests.size() && turns < 5'000'000; ++turns) {
    SignalGuard::check();
    crash_point("rehearsal_turn");
    Millis due = sched.tick();
    if (provider.active()) {
      provider.answer_all();
      continue;
    }
    const int64_t step = std::max<int64_t>(due.count(), 1);
    if (sim_ms + step > limit_ms) break;
    std::map<std::string, std::string> now_waiting;  // kind -> reason
    if (!sched.submit_wait().empty()) now_waiting.emplace(wait_kind(sched.submit_wait()), sched.submit_wait());
    bool working = false;  // a shot submitted and not ended: its end may release money
    for (const auto& [key, shot] : sched.book().shots()) {
      working |= occupies_slot(shot.state);
      if (shot.state == ShotState::pending && shot.reason.rfind("waiting: ", 0) == 0)
        now_waiting.emplace(wait_kind(shot.reason), shot.reason);
    }
    // Stalled for good: nothing at work and every pending shot waits on money,
    // which nothing in a rehearsal adds (no top-up, no new day's budget is
    // counted within it: a daily budget wait runs to the horizon).
    bool stalled = !working && !now_waiting.empty();
    for (const auto& [kind, reason] : now_waiting) {
      const bool batch_budget = kind == "budget" && reason.find("daily budget") == std::string::npos;
      const bool no_credits = kind == "credits" && reason.find("reading the credit balance") == std::string::npos;
      stalled &= batch_budget || no_credits;
    }
    for (const auto& [kind, reason] : now_waiting) {
      auto it = wait_at.find(kind);
      if (it == wait_at.end()) {
        it = wait_at.emplace(kind, out.waits.size()).first;
        out.waits.push_back({reason, kind, 0, to_epoch_ms(wall0) + sim_ms});
      }
      out.waits[it->second].seconds += static_cast<double>(step) / 1000.0;
    }
    if (stalled) {
      out.stalled = true;
      break;
    }
    sim_ms += step;
  }
  out.finished = finished.size() == manifests.size();
  if (!out.finished) out.finish_ms = 0;
  out.credits = provider.charged();
  for (const auto& [endpoint, n] : out.requests) out.api_requests += n;
  for (const auto& [file, m] : manifests)
    for (const auto& s : store->shots(m.batch)) ++out.states[to_string(s.state)];
  if (out.finished && out.first_submit_ms) out.makespan_s = static_cast<double>(out.finish_ms - out.first_submit_ms) / 1000.0;
  out.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_started).count();
  return out;
}

std::string rehearsal_text(const RehearsalResult& r) {
  std::ostringstream o;
  o << "rehearsal of " << r.shots << " shots from " << local_text(r.start_ms) << " (nothing was sent or spent)\n";
  for (const auto& v : r.revisions)
    o << "  batch " << v.batch << ": "
      << (v.no_op ? "a no-op revision (revision " + std::to_string(v.revision) + " stays)"
                  : "revision " + std::to_string(v.revision))
      << ": " << v.renders << " of " << v.shots << " shots render, " << v.shots - v.renders
      << " kept (as `wanbatch plan` decides)\n";
  o << "  render times: " << (r.learned_samples ? std::to_string(r.learned_samples) + " learned" : std::string("none learned"))
    << (r.learned_samples ? "" : ", the product page's prior") << "; balance: "
    << (r.balance ? credits_text(to_micro(*r.balance)) + " (the daemon's last reading)" : std::string("unknown (no daemon answered): not a limit here"))
    << "\n";
  if (r.first_submit_ms) o << "  first submit  " << local_text(r.first_submit_ms) << "\n";
  else o << "  first submit  never\n";
  if (r.finished) {
    o << "  finish        " << local_text(r.finish_ms) << "\n";
    o << "  makespan      " << duration_text(r.makespan_s) << " (first submit to the last batch's end)\n";
  } else if (r.stalled) {
    o << "  finish        never: nothing is at work and every waiting shot waits on money that nothing adds (below)\n";
  } else {
    o << "  finish        not within the rehearsal's horizon: the batch would still wait (below)\n";
  }
  o << "  credits       " << credits_text(to_micro(r.credits)) << "\n";
  o << "  API requests  " << r.api_requests;
  std::string sep = " (";
  for (const auto& [endpoint, n] : r.requests) {
    o << sep << endpoint << " " << n;
    sep = ", ";
  }
  o << (r.requests.empty() ? "" : ")") << "; " << r.downloads << " downloads\n";
  o << "  shots        ";
  for (const auto& [state, n] : r.states) o << " " << state << " " << n;
  o << "\n";
  if (r.waits.empty()) o << "  waits         none\n";
  for (const auto& w : r.waits)
    o << "  waits on " << w.kind << ": " << duration_text(w.seconds) << " from " << local_text(w.first_ms) << ": "
      << w.reason << "\n";
  return o.str();
}

std::string rehearsal_json(const RehearsalResult& r) {
  auto when = [](int64_t ms) { return ms ? json(iso8601_utc(from_epoch_ms(ms))) : json(nullptr); };
  json waits = json::array();
  for (const auto& w : r.waits)
    waits.push_back({{"kind", w.kind}, {"reason", w.reason}, {"seconds", w.seconds}, {"from", when(w.first_ms)}});
  json revisions = json::array();
  for (const auto& v : r.revisions)
    revisions.push_back(
        {{"batch", v.batch}, {"revision", v.revision}, {"no_op", v.no_op}, {"renders", v.renders}, {"shots", v.shots}});
  json j = {{"start", when(r.start_ms)},
            {"first_submit", when(r.first_submit_ms)},
            {"finish", when(r.finish_ms)},
            {"finished", r.finished},
            {"stalled", r.stalled},
            {"makespan_seconds", r.finished ? json(r.makespan_s) : json(nullptr)},
            {"credits", credits_json(to_micro(r.credits))},
            {"api_requests", r.api_requests},
            {"requests", r.requests},
            {"downloads", r.downloads},
            {"shots", r.shots},
            {"states", r.states},
            {"waits", waits},
            {"balance", r.balance ? json(*r.balance) : json(nullptr)},
            {"learned_render_samples", r.learned_samples},
            {"revisions", revisions}};
  return json_text(j) + "\n";
}

int cmd_rehearse(const Config& config, const std::vector<std::string>& files, const RehearseOptions& options,
                 std::ostream& out, std::ostream& err) {
  RehearsalResult r;
  try {
    r = rehearse(config, files, options);
  } catch (const RehearsalInterrupted& e) {
    err << e.what() << "\n";
    return 128 + e.signal;
  } catch (const Error& e) {
    err << e.what() << (std::string(e.what()).empty() || std::string(e.what()).back() == '\n' ? "" : "\n");
    return 1;
  }
  out << (options.json ? rehearsal_json(r) : rehearsal_text(r));
  return r.finished ? 0 : 1;
}

}  // namespace wb
