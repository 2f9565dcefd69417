// `wanbatch status [BATCH] [--json] [--watch]`: reads the store read-only and asks
// the running daemon for its live figures, then prints daemon/status.h's view.
// --watch on a terminal redraws in place (cursor home, each line cleared to its
// end, the rest of the screen cleared) with the cursor hidden, until SIGINT or
// SIGTERM, then shows the cursor again; to a pipe it prints each snapshot as plain
// lines, a blank line between them.
#include <signal.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <sstream>
#include <utility>
#include <vector>

#include "daemon/commands.h"
#include "daemon/control.h"
#include "daemon/status.h"
#include "jobs/json_safe.h"
#include "jobs/store.h"
#include "jobs/util.h"

namespace wb {

namespace {

// How long `status` waits for the daemon's answer: a busy daemon is said to be
// busy, not "not running", and the view is not held up long.
constexpr int kPingTimeoutSeconds = 3;

volatile sig_atomic_t g_stop = 0;
void on_stop_signal(int) { g_stop = 1; }

// A read-only view of a store the daemon is writing: a table file it compacts
// away while we read is an error; a fresh view a moment later is not.
StatusSnapshot read_snapshot(const Config& config) {
  StatusSnapshot snap;
  for (int attempt = 1;; ++attempt) {
    try {
      auto store = Store::open(join_path(config.state_dir, "db"), Store::Mode::read_only);
      snap.batches.clear();
      for (auto& b : store->batches()) snap.batches.emplace_back(b, store->shots(b.name));
      // Why every submit waits, daemon-wide ("" when none): the daemon keeps it in
      // its store whenever it changes.
      snap.submit_wait = store->meta("submit_wait").value_or("");
      snap.render_model = store->meta("render_model").value_or("");
      snap.cost_model = store->meta("cost_model").value_or("");
      break;
    } catch (const Error& e) {
      if (attempt < 5 && std::string(e.what()).find("no state in") == std::string::npos) {
        ::usleep(100000);
        continue;
      }
      throw;
    }
  }
  snap.max_in_flight = config.limits.max_in_flight;
  snap.submits_per_minute = config.limits.submits_per_minute;
  try {
    auto ping = control_request(config.state_dir, {{"command", "ping"}}, kPingTimeoutSeconds);
    snap.daemon_running = true;
    snap.paused = ping.value("paused", false);
    if (auto cap = ping.find("max_in_flight"); cap != ping.end() && cap->is_number_integer())
      snap.max_in_flight = cap->get<int>();
    if (auto rate = ping.find("submits_per_minute"); rate != ping.end() && rate->is_number())
      snap.submits_per_minute = rate->get<double>();
  } catch (const ControlError& e) {
    snap.daemon_running = false;
    if (e.kind == ControlError::Kind::timed_out)
      snap.daemon_silent = "busy: not answering in " + std::to_string(kPingTimeoutSeconds) +
                           " s (it runs; its loop is slow or stuck: see its log)";
    else if (e.kind == ControlError::Kind::no_answer)
      snap.daemon_silent = "not answering (it closed the connection; stopping?)";
  } catch (const Error&) {
    snap.daemon_running = false;
  }
  snap.now_ms = to_epoch_ms(std::chrono::system_clock::now());
  return snap;
}

// One frame: the text or JSON of the view. Throws wb::Error for an unknown batch.
std::string frame(const Config& config, const StatusOptions& o, int width) {
  StatusSnapshot snap = read_snapshot(config);
  StatusView view = summarize(snap, config.pricing, config.poll.prior_render_seconds);
  TextStyle style{o.colour, width};
  if (o.batch.empty()) return o.json ? json_text(overview_json(view)) + "\n" : overview_text(view, style);
  for (size_t i = 0; i < snap.batches.size(); ++i) {
    if (snap.batches[i].first.name != o.batch) continue;
    auto rows = shot_rows(snap.batches[i].first, snap.batches[i].second, snap.now_ms);
    if (!o.json) return batch_text(view, view.batches[i], rows, style);
    nlohmann::json j = overview_json(view);
    j["batches"] = nlohmann::json::array({batch_json(view.batches[i])});
    j["shot_list"] = shot_rows_json(rows);
    return json_text(j) + "\n";
  }
  throw Error("no batch named " + o.batch + " (wanbatch status lists them)");
}

// The terminal's size, {0, 0} when unknown.
std::pair<int, int> terminal_size() {
  struct winsize ws {};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) return {ws.ws_col, ws.ws_row};
  return {0, 0};
}

// Sleeps up to `seconds`; a stop signal ends it early.
void pause_for(double seconds) {
  struct timespec ts {};
  ts.tv_sec = static_cast<time_t>(seconds);
  ts.tv_nsec = static_cast<long>((seconds - std::floor(seconds)) * 1e9);
  while (!g_stop && ::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// The frame redrawn over the last one: each line cleared to its end, then
// everything below the last line. At most `rows` - 1 lines (0: no limit), so
// that the screen never scrolls.
std::string in_place(const std::string& text, int rows) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  if (rows > 1 && lines.size() > static_cast<size_t>(rows - 1)) {
    size_t more = lines.size() - static_cast<size_t>(rows - 2);
    lines.resize(static_cast<size_t>(rows - 2));
    lines.push_back("... " + std::to_string(more) + " more lines (a taller terminal, or without --watch)");
  }
  std::string out = "\x1b[H";
  for (const auto& line : lines) out += line + "\x1b[K\n";
  return out + "\x1b[J";
}

}  // namespace

StatusOptions StatusOptions::for_stdout() {
  StatusOptions o;
  o.terminal = ::isatty(STDOUT_FILENO) == 1;
  const char* term = std::getenv("TERM");
  bool dumb = term && std::strcmp(term, "dumb") == 0;
  o.colour = o.terminal && !dumb && std::getenv("NO_COLOR") == nullptr;
  o.width = o.terminal ? terminal_size().first : 0;
  if (dumb) o.terminal = false;  // no cursor movement on a dumb terminal
  return o;
}

int cmd_status(const Config& config, const StatusOptions& options, std::ostream& out, std::ostream& err) {
  if (!options.watch) {
    try {
      out << frame(config, options, 0);
      return 0;
    } catch (const Error& e) {
      err << e.what() << "\n";
      return 1;
    }
  }
  g_stop = 0;
  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = on_stop_signal;  // no SA_RESTART: the sleep ends at once
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  const bool redraw = options.terminal && !options.json;
  if (redraw) out << "\x1b[?25l\x1b[H\x1b[2J" << std::flush;  // hide the cursor, clear once
  bool first = true;
  while (!g_stop) {
    std::string text;
    auto [columns, rows] = redraw ? terminal_size() : std::pair<int, int>{0, 0};
    try {
      // Lines fit the terminal so that none wraps and the redraw stays in place.
      text = frame(config, options, columns);
    } catch (const Error& e) {
      text = std::string(e.what()) + "\n";  // a store briefly unreadable: said, and looked at again
      if (!redraw) {
        err << text;
        text.clear();
      }
    }
    if (redraw) out << in_place(text, rows);
    else if (!text.empty()) out << (first || options.json ? "" : "\n") << text;
    out << std::flush;
    first = false;
    pause_for(std::max(options.interval_seconds, 0.1));
  }
  if (redraw) out << "\x1b[?25h" << std::flush;  // the cursor back
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  return 0;
}

}  // namespace wb
