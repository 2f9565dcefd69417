// Implementation notes. The ETA is a list-scheduling simulation over a min-heap of
// slot free times (O(n log cap) for n unended shots): the jobs at the provider fill
// the slots first (when there are more than the cap, as after a SIGHUP lowered it,
// a new submit waits until the count is under the cap again, so the slots free up
// at the largest `cap` of their remaining times), then the pending shots go in
// submit order. Distributions are built once per class (about a millisecond each).
// Text is plain first; colour is laid over the bar afterwards, so truncation to
// the terminal's width never cuts an escape sequence.
#include "daemon/status.h"

#include <time.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <queue>
#include <sstream>

#include "jobs/engine/book.h"
#include "jobs/engine/stuck.h"
#include "jobs/json_safe.h"
#include "jobs/revision.h"
#include "jobs/util.h"

namespace wb {

namespace {

// The spec of a revision's next take queued behind the shot's take, if any
// (an unreadable queued record counts as the shot's own spec again).
std::optional<ShotSpec> queued_take(const Shot& s) {
  if (s.next_take.empty() || is_terminal(s.state)) return std::nullopt;
  try {
    return next_take_from(s.next_take).spec;
  } catch (const std::exception&) {
    return s.spec;
  }
}

bool needs_person(ShotState s) {
  return s == ShotState::held || s == ShotState::failed || s == ShotState::rejected;
}

// Mean render time of each class, and the distribution for a job under way.
class ClassTimes {
 public:
  explicit ClassTimes(const RenderModel& model) : model_(model) {}
  const RenderDist& dist(const RenderClass& cls) {
    auto it = dists_.find(cls.key());
    if (it == dists_.end()) it = dists_.emplace(cls.key(), model_.dist(cls)).first;
    return it->second;
  }
  double mean(const RenderClass& cls) {
    const RenderDist& d = dist(cls);
    return d.empty() ? RenderModel::prior_median(cls, model_.prior_seconds()) : d.mean();
  }
  double remaining(const RenderClass& cls, double elapsed_s) {
    const RenderDist& d = dist(cls);
    if (d.empty()) return std::max(0.0, mean(cls) - elapsed_s);
    return d.mean_residual(std::max(0.0, elapsed_s));
  }

 private:
  const RenderModel& model_;
  std::map<std::string, RenderDist> dists_;
};

std::string pad(const std::string& s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

// Cuts `line` to `width` columns (bytes, kept whole UTF-8 characters; our text is
// mostly ASCII), marking the cut with "~".
std::string fit(const std::string& line, int width) {
  if (width <= 0 || line.size() <= static_cast<size_t>(width)) return line;
  size_t cut = static_cast<size_t>(std::max(width - 1, 0));
  while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
  return line.substr(0, cut) + "~";
}

const char* kReset = "\x1b[0m";

std::string colour_of(char cell) {
  switch (cell) {
    case '#': return "\x1b[32m";  // green: done
    case '!': return "\x1b[31m";  // red: failed or held
    case '>': return "\x1b[33m";  // yellow: in flight
    default: return "\x1b[2m";    // dim: pending
  }
}

// Colours the bar that starts at `at` ("[" ... "]"), as far as the line goes.
std::string colour_bar(const std::string& line, size_t at) {
  if (at >= line.size() || line[at] != '[') return line;
  std::string out = line.substr(0, at + 1);
  size_t i = at + 1;
  char current = 0;
  for (; i < line.size() && line[i] != ']'; ++i) {
    if (line[i] != current) {
      out += colour_of(line[i]);
      current = line[i];
    }
    out += line[i];
  }
  if (current) out += kReset;
  return out + line.substr(i);
}

// "20", "18.2", "0.5": submits a minute.
std::string rate_text(double per_minute) {
  char buf[32];
  std::snprintf(buf, sizeof buf, per_minute >= 100 ? "%.0f" : "%.3g", per_minute);
  return buf;
}

std::string local_clock(int64_t epoch_ms, int64_t now_ms) {
  time_t secs = static_cast<time_t>(epoch_ms / 1000);
  struct tm tm {};
  localtime_r(&secs, &tm);
  char buf[32];
  if (epoch_ms - now_ms < 20 * 3600 * 1000LL)
    std::strftime(buf, sizeof buf, "%H:%M", &tm);
  else
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

// The batch's line, plain; `bar_at` is set to where its bar starts.
std::string batch_line(const StatusView& v, const BatchStatus& b, size_t& bar_at) {
  std::ostringstream o;
  o << b.batch << " ";
  bar_at = static_cast<size_t>(o.tellp());
  o << progress_bar(b, 20, false) << " " << static_cast<int>(std::floor(b.progress * 100)) << "%  " << b.done
    << "/" << b.shots << " done";
  for (const char* st : {"HELD", "FAILED", "REJECTED", "CANCELLED"}) {
    auto it = b.states.find(st);
    if (it == b.states.end() || it->second == 0) continue;
    std::string name = st;
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    o << ", " << it->second << " " << name;
  }
  if (b.in_flight) o << ", " << b.in_flight << " in flight";
  if (b.stuck) o << " (" << b.stuck << " stuck)";
  if (b.pending) o << ", " << b.pending << " pending";
  if (b.takes_queued) o << ", " << b.takes_queued << (b.takes_queued == 1 ? " take" : " takes") << " queued";
  o << "  credits " << credits_text(b.spent) << " spent";
  if (!b.finished || b.remaining_estimate) o << ", ~" << credits_text(b.remaining_estimate) << " to go";
  if (b.budget) o << " of budget " << credits_text(to_micro(*b.budget));
  if (b.finished) {
    o << "  finished";
    return o.str();
  }
  if (b.eta_ms)
    o << "  ETA " << local_clock(*b.eta_ms, v.now_ms) << " (in " << short_duration(*b.eta_ms - v.now_ms) << ")";
  else if (!b.no_eta.empty())
    o << "  ETA unknown (" << b.no_eta << ")";
  if (b.in_flight || b.pending) {
    o << "  cap " << v.max_in_flight << ", " << rate_text(v.submits_per_minute) << "/min";
  }
  return o.str();
}

std::string styled(const std::string& plain, size_t bar_at, const TextStyle& style) {
  std::string line = fit(plain, style.width);
  return style.colour ? colour_bar(line, bar_at) : line;
}

void detail_lines(std::ostringstream& o, const BatchStatus& b, const TextStyle& style, size_t attention_lines) {
  for (const auto& [reason, n] : b.waiting)
    o << fit("  " + std::to_string(n) + " shot(s) " + reason, style.width) << "\n";
  size_t shown = 0;
  for (const auto& a : b.attention) {
    if (shown++ == attention_lines) {
      o << "  ... and " << (b.attention.size() - attention_lines) << " more: wanbatch status " << b.batch << "\n";
      break;
    }
    o << fit("  " + a.id + " " + a.state + ": " + a.reason, style.width) << "\n";
  }
}

void footer_lines(std::ostringstream& o, const StatusView& v, const TextStyle& style) {
  if (!v.submit_wait.empty())
    o << fit("submits: " + v.submit_wait + (v.daemon_running ? "" : " (when the daemon last ran)"), style.width)
      << "\n";
  if (!v.daemon_running) {
    o << fit("daemon: " + (v.daemon_silent.empty() ? std::string("not running") : v.daemon_silent), style.width) << "\n";
    return;
  }
  o << fit("daemon: running, " + std::to_string(v.at_provider) + " of " + std::to_string(v.max_in_flight) +
               " in flight (limits.max_in_flight), submits at up to " + rate_text(v.submits_per_minute) + "/min" +
               (v.paused ? ", submits PAUSED (wanbatch resume)" : ""),
           style.width)
    << "\n";
}

}  // namespace

std::string short_duration(int64_t ms) {
  int64_t s = std::max<int64_t>(0, (ms + 999) / 1000);
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm", static_cast<long long>((s + 59) / 60));
  else if (s < 86400)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  else
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", static_cast<long long>(s / 86400),
                  static_cast<long long>(s % 86400 / 3600));
  return buf;
}

std::string progress_bar(const BatchStatus& b, int width, bool colour) {
  const int counts[4] = {b.done, b.failed_or_held, b.in_flight, b.pending};
  const char cells[4] = {'#', '!', '>', '.'};
  const int total = counts[0] + counts[1] + counts[2] + counts[3];
  int n[4] = {0, 0, 0, 0};
  if (total > 0 && width > 0) {
    // Largest remainder, then at least one cell for each part that has shots.
    double rem[4];
    int used = 0;
    for (int i = 0; i < 4; ++i) {
      double exact = static_cast<double>(counts[i]) * width / total;
      n[i] = static_cast<int>(exact);
      rem[i] = exact - n[i];
      used += n[i];
    }
    while (used < width) {
      int best = 0;
      for (int i = 1; i < 4; ++i)
        if (rem[i] > rem[best]) best = i;
      ++n[best];
      rem[best] = -1;
      ++used;
    }
    for (int i = 0; i < 4; ++i) {
      if (counts[i] == 0 || n[i] > 0) continue;
      int largest = static_cast<int>(std::max_element(n, n + 4) - n);
      if (n[largest] <= 1) break;  // width under four: nothing to take from
      --n[largest];
      n[i] = 1;
    }
  } else {
    n[3] = width;
  }
  std::string bar = "[";
  for (int i = 0; i < 4; ++i) bar += std::string(static_cast<size_t>(n[i]), cells[i]);
  bar += "]";
  return colour ? colour_bar(bar, 0) : bar;
}

std::map<std::string, double> expected_ends(const std::vector<EtaJob>& jobs, const RenderModel& model,
                                            int max_in_flight, double submits_per_minute) {
  ClassTimes times(model);
  std::map<std::string, double> ends;
  const size_t cap = static_cast<size_t>(std::max(1, max_in_flight));
  std::vector<double> running;
  for (const auto& j : jobs) {
    if (at_provider(j.state)) {
      double rem = times.remaining(j.cls, j.elapsed_s) + (j.then ? times.mean(*j.then) : 0.0);
      running.push_back(rem);
      ends[j.batch] = std::max(ends[j.batch], rem);
    } else if (occupies_slot(j.state)) {  // fetching, downloading: ending now, then its queued take
      double rem = j.then ? times.mean(*j.then) : 0.0;
      if (j.then) running.push_back(rem);
      ends[j.batch] = std::max(ends[j.batch], rem);
    }
  }
  std::sort(running.begin(), running.end());
  std::priority_queue<double, std::vector<double>, std::greater<>> free_at;
  for (size_t i = running.size() > cap ? running.size() - cap : 0; i < running.size(); ++i) free_at.push(running[i]);
  while (free_at.size() < cap) free_at.push(0.0);
  const double spacing = submits_per_minute > 0 ? 60.0 / submits_per_minute : 0.0;
  size_t submitted = 0;
  for (const auto& j : jobs) {
    if (j.state != ShotState::pending) continue;
    double start = std::max(free_at.top(), spacing * static_cast<double>(submitted++));
    free_at.pop();
    double end = start + times.mean(j.cls) + (j.then ? times.mean(*j.then) : 0.0);
    free_at.push(end);
    ends[j.batch] = std::max(ends[j.batch], end);
  }
  return ends;
}

StatusView summarize(const StatusSnapshot& snap, const PricingConfig& pricing, double prior_render_seconds) {
  StatusView v;
  v.submit_wait = snap.submit_wait;
  v.daemon_running = snap.daemon_running;
  v.daemon_silent = snap.daemon_silent;
  v.paused = snap.paused;
  v.max_in_flight = snap.max_in_flight;
  v.submits_per_minute = snap.submits_per_minute;
  v.now_ms = snap.now_ms;

  RenderModel model;
  if (!snap.render_model.empty())
    model = RenderModel::from_json(nlohmann::json::parse(snap.render_model, nullptr, false));
  model.set_prior_seconds(prior_render_seconds);
  CostModel costs(pricing);
  if (!snap.cost_model.empty()) costs.load(snap.cost_model);

  struct Pending {
    ShotBook::PendingKey order;  // the daemon's submit order
    EtaJob job;
  };
  std::vector<Pending> eta_jobs;
  for (const auto& [rec, shots] : snap.batches) {
    BatchStatus b;
    b.batch = rec.name;
    b.finished = rec.finished;
    b.priority = rec.priority;
    b.shots = static_cast<int>(shots.size());
    b.states = count_states(shots);
    b.budget = rec.budget_credits;
    int ended = 0;
    for (const auto& s : shots) {
      if (s.state == ShotState::done) ++b.done;
      else if (is_terminal(s.state)) ++b.failed_or_held;
      else if (s.state == ShotState::pending) ++b.pending;
      else ++b.in_flight;
      ended += is_terminal(s.state);
      b.spent += s.earlier_cost_micro;  // earlier takes (revisions)
      if (s.cost) b.spent += to_micro(*s.cost);
      else if (!is_terminal(s.state)) b.remaining_estimate += costs.estimate(s.spec);
      if (auto next = queued_take(s)) {  // a revision's next take: still to go, after this one
        ++b.takes_queued;
        b.remaining_estimate += costs.estimate(*next);
      }
      if (needs_person(s.state)) b.attention.push_back({s.spec.id, to_string(s.state), s.reason});
      else if (is_stuck(s)) {
        ++b.stuck;
        b.attention.push_back({s.spec.id, "IN_FLIGHT (stuck)", s.reason});
      } else if (!is_terminal(s.state) && !s.reason.empty()) ++b.waiting[s.reason];
      else if (s.state == ShotState::pending && !snap.submit_wait.empty())
        ++b.waiting[snap.submit_wait];  // no reason of its own: it waits with every submit
    }
    b.progress = b.shots ? static_cast<double>(ended) / b.shots : 1.0;
    v.at_provider += static_cast<int>(std::count_if(shots.begin(), shots.end(), [](const Shot& s) {
      return at_provider(s.state);
    }));
    if (ended < b.shots) {
      if (!snap.daemon_running) b.no_eta = snap.daemon_silent.empty() ? "daemon not running" : "daemon not answering";
      else if (snap.paused) b.no_eta = "submits paused";
      else if (!Spend::batch_budget_gate(b.budget, b.spent, b.remaining_estimate).empty())
        b.no_eta = "the batch budget does not cover the rest";
    }
    for (const auto& s : shots) {
      if (is_terminal(s.state)) continue;
      if (s.state == ShotState::pending && !b.no_eta.empty()) continue;  // it will not go: no slot for it
      EtaJob j{rec.name, RenderClass{s.spec.resolution, s.spec.duration}, s.state,
               s.submitted_ms ? static_cast<double>(snap.now_ms - s.submitted_ms) / 1000.0 : 0.0};
      if (auto next = queued_take(s)) j.then = RenderClass{next->resolution, next->duration};
      eta_jobs.push_back({ShotBook::submit_order(&rec, s), j});
    }
    v.batches.push_back(std::move(b));
  }
  std::stable_sort(eta_jobs.begin(), eta_jobs.end(),
                   [](const Pending& a, const Pending& b) { return a.order < b.order; });
  std::vector<EtaJob> jobs;
  jobs.reserve(eta_jobs.size());
  for (auto& p : eta_jobs) jobs.push_back(std::move(p.job));
  auto ends = expected_ends(jobs, model, snap.max_in_flight, snap.submits_per_minute);
  for (auto& b : v.batches) {
    if (b.progress >= 1.0 || !b.no_eta.empty()) continue;
    auto it = ends.find(b.batch);
    if (it != ends.end()) b.eta_ms = snap.now_ms + static_cast<int64_t>(std::ceil(it->second * 1000));
  }
  return v;
}

// " (take 2: prompt)" and " (removed)" after the reason.
static std::string changes_note(const ShotRow& r) {
  std::string out;
  if (!r.changes.empty()) {
    out += " (take " + std::to_string(r.take) + ": ";
    for (size_t i = 0; i < r.changes.size(); ++i) out += (i ? ", " : "") + r.changes[i];
    out += ")";
  }
  if (r.removed) out += " (removed from the manifest)";
  if (r.queued_take)
    out += " (take " + std::to_string(r.queued_take) + " queued behind take " + std::to_string(r.take) + " " +
           (r.state == "PENDING" ? "uploading its media" : "in flight") + ")";
  return out;
}

std::vector<ShotRow> shot_rows(const BatchRecord& batch, const std::vector<Shot>& shots, int64_t now_ms) {
  std::vector<ShotRow> rows;
  rows.reserve(shots.size());
  for (const auto& s : shots)
    rows.push_back({s.spec.id, to_string(s.state), s.reason, s.request_id,
                    std::max<int64_t>(0, now_ms - (s.submitted_ms ? s.submitted_ms : batch.created_ms)), s.take,
                    s.changes, s.removed, is_stuck(s),
                    !s.next_take.empty() && !is_terminal(s.state) ? s.take + 1 : 0});
  return rows;
}

std::string overview_text(const StatusView& v, const TextStyle& style, size_t attention_lines) {
  std::ostringstream o;
  if (v.batches.empty()) o << "no batches yet\n";
  for (const auto& b : v.batches) {
    size_t bar_at = 0;
    std::string plain = batch_line(v, b, bar_at);
    o << styled(plain, bar_at, style) << "\n";
    detail_lines(o, b, style, attention_lines);
  }
  footer_lines(o, v, style);
  return o.str();
}

std::string batch_text(const StatusView& v, const BatchStatus& b, const std::vector<ShotRow>& rows,
                       const TextStyle& style) {
  std::ostringstream o;
  size_t bar_at = 0;
  o << styled(batch_line(v, b, bar_at), bar_at, style) << "\n";
  for (const auto& [reason, n] : b.waiting) o << fit("  " + std::to_string(n) + " shot(s) " + reason, style.width) << "\n";
  size_t w_id = 4, w_state = 5, w_req = 10;
  auto state_text = [](const ShotRow& r) { return r.stuck ? r.state + " (stuck)" : r.state; };
  for (const auto& r : rows) {
    w_id = std::max(w_id, r.id.size());
    w_state = std::max(w_state, state_text(r).size());
    w_req = std::max(w_req, r.request_id.size());
  }
  o << fit(pad("SHOT", w_id) + "  " + pad("STATE", w_state) + "  " + pad("AGE", 6) + "  TAKE  " +
               pad("REQUEST_ID", w_req) + "  REASON",
           style.width)
    << "\n";
  for (const auto& r : rows) {
    std::string state = pad(state_text(r), w_state);
    if (style.colour) {
      const char* c = r.state == "DONE" ? "\x1b[32m"
                      : (r.state == "HELD" || r.state == "FAILED" || r.state == "REJECTED" || r.stuck) ? "\x1b[31m"
                                                                                              : "";
      if (*c) state = c + state + kReset;
    }
    std::string line = pad(r.id, w_id) + "  " + state + "  " + pad(short_duration(r.age_ms), 6) + "  " +
                       pad(std::to_string(r.take), 4) + "  " + pad(r.request_id.empty() ? "-" : r.request_id, w_req) +
                       "  " + r.reason + changes_note(r);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    // Truncation counts the escape bytes too: a coloured line is cut a little early, never inside one.
    o << (style.colour ? line : fit(line, style.width)) << "\n";
  }
  footer_lines(o, v, style);
  return o.str();
}

nlohmann::json batch_json(const BatchStatus& b) {
  nlohmann::json waiting = nlohmann::json::object();
  for (const auto& [reason, n] : b.waiting) waiting[reason] = n;
  return {{"batch", b.batch},
          {"shots", b.shots},
          {"states", b.states},
          {"finished", b.finished},
          {"priority", b.priority},
          {"progress", b.progress},
          {"credits_spent", credits_json(b.spent)},
          {"credits_remaining_estimate", credits_json(b.remaining_estimate)},
          {"budget_credits", b.budget ? credits_json(to_micro(*b.budget)) : nlohmann::json(nullptr)},
          {"eta", b.eta_ms ? nlohmann::json(iso8601_utc(from_epoch_ms(*b.eta_ms))) : nlohmann::json(nullptr)},
          {"eta_unknown", b.no_eta},
          {"stuck", b.stuck},
          {"takes_queued", b.takes_queued},
          {"waiting", waiting}};
}

nlohmann::json overview_json(const StatusView& v) {
  nlohmann::json batches = nlohmann::json::array();
  for (const auto& b : v.batches) batches.push_back(batch_json(b));
  return {{"batches", batches},
          {"submit_wait", v.submit_wait},
          {"daemon",
           {{"running", v.daemon_running},
            {"not_answering", v.daemon_silent.empty() ? nlohmann::json(nullptr) : nlohmann::json(v.daemon_silent)},
            {"paused", v.paused},
            {"in_flight", v.at_provider},
            {"max_in_flight", v.max_in_flight},
            {"submits_per_minute", v.submits_per_minute}}}};
}

nlohmann::json shot_rows_json(const std::vector<ShotRow>& rows) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : rows)
    out.push_back({{"id", r.id},
                   {"state", r.state},
                   {"age_seconds", r.age_ms / 1000},
                   {"reason", r.reason},
                   {"request_id", r.request_id},
                   {"take", r.take},
                   {"changes", r.changes},
                   {"removed", r.removed},
                   {"stuck", r.stuck},
                   {"take_queued", r.queued_take ? nlohmann::json(r.queued_take) : nlohmann::json(nullptr)}});
  return out;
}

}  // namespace wb
